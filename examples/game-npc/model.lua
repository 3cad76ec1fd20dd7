-- A deterministic stand-in for the model (script provider), used to record
-- cassette.jsonl: run `game_npc --record`. It reads the thread from the prompt.
return function(request)
  local system = request.messages[1].content
  local text = request.messages[#request.messages].content
  local looked = text:find("<tool_response>") ~= nil and text:find("<look_around>") ~= nil
  if system:find("gate guard") then
    if not text:find("<look_around>") then return '{"intent": "look_around", "radius": 10}' end
    if not text:find("<move_to>") then
      local x, y = text:match("name: stranger, x: (%-?[%d.]+), y: (%-?[%d.]+)")
      return string.format('{"intent": "move_to", "x": %s, "y": %s}', x or 0, y or 0)
    end
    return '{"intent": "say", "text": "Halt! Who goes there?"}'
  end
  if not looked then return '{"intent": "look_around", "radius": 10}' end
  if not text:find("<trade>") then return '{"intent": "trade", "item": "healing potion", "price": 12}' end
  return '{"intent": "say", "text": "Fine wares, traveller! A potion for 12 gold."}'
end

-- Offline by default: the replay provider serves the recorded cassette.
-- Use a live model with: luagent run examples/calculator "..." --provider openai
provider = "replay"
cassette = "cassette.jsonl"

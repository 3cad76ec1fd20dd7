# The installable package: find_package(luagent CONFIG) + luagent::luagent, or
# pkg-config luagent. The static library carries its dependencies as usage requirements;
# luagentConfig.cmake finds them again with find_dependency.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set_target_properties(libluagent PROPERTIES EXPORT_NAME luagent)
target_include_directories(libluagent INTERFACE $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
foreach(dependency nlohmann_json::nlohmann_json CURL::libcurl SQLite::SQLite3 OpenSSL::Crypto
                   Threads::Threads PkgConfig::LUA)
  target_link_libraries(libluagent INTERFACE $<INSTALL_INTERFACE:${dependency}>)
endforeach()
target_link_libraries(libluagent INTERFACE $<INSTALL_INTERFACE:${CMAKE_DL_LIBS}>)

install(TARGETS libluagent EXPORT luagentTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS luagent RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY host/include/luagent DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY stdlib/ DESTINATION ${CMAKE_INSTALL_DATADIR}/luagent/stdlib)
install(DIRECTORY bindings/meta/ DESTINATION ${CMAKE_INSTALL_DATADIR}/luagent/meta)
install(EXPORT luagentTargets NAMESPACE luagent:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/luagent)
configure_package_config_file(cmake/luagentConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/luagentConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/luagent)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/luagentConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/luagentConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/luagentConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/luagent)
configure_file(cmake/luagent.pc.in ${CMAKE_CURRENT_BINARY_DIR}/luagent.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/luagent.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

// loopcpp-tools: helpers from llama.cpp's common library that hosts without C++ call through a
// plain C function (Python's cffi bindings). Built with llama-common (LOOPCPP_BUILD_SERVER).
#include "json-schema-to-grammar.h"
#include "json.h"

#include <cstdint>
#include <cstring>
#include <exception>
#include <string>

#if defined(_WIN32)
#    define LOOPCPP_TOOLS_API extern "C" __declspec(dllexport)
#else
#    define LOOPCPP_TOOLS_API extern "C" __attribute__((visibility("default")))
#endif

static int32_t copy_out(const std::string & s, char * buf, size_t size) {
    if (buf && size > 0) {
        size_t n = s.size() < size - 1 ? s.size() : size - 1;
        memcpy(buf, s.data(), n);
        buf[n] = '\0';
    }
    return (int32_t) s.size();
}

// Converts a JSON schema (JSON text) to a GBNF grammar with llama.cpp's own converter.
// Returns the grammar's length (copied to buf, NUL-terminated, when it fits in size), or -1 with
// the reason in err. Never throws.
LOOPCPP_TOOLS_API int32_t loopcpp_json_schema_to_grammar(const char * schema, char * buf, size_t size,
                                                        char * err, size_t err_size) {
    try {
        return copy_out(json_schema_to_grammar(common_json::parse(schema ? schema : "")), buf, size);
    } catch (const std::exception & e) {
        copy_out(e.what(), err, err_size);
        return -1;
    }
}

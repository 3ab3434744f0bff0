# Writes OUT, a C file defining ks_schema_json (the bytes of IN, NUL-terminated) and its length.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x..,){32})" "\\1\n" bytes "${bytes}")
file(WRITE "${OUT}.tmp" "/* Generated from ops/kubesim/schema.json by embed.cmake: do not edit. */\n#include <stddef.h>\nconst char ks_schema_json[] = {\n${bytes}0x00};\nconst size_t ks_schema_json_len = ${len};\n")
file(RENAME "${OUT}.tmp" "${OUT}")

// bf16 as CUDA stores it, shared by the emulator's libraries and its device-language header: the high 16 bits of an
// f32, rounded to nearest even (NaN stays a quiet NaN).
#pragma once

#include <cstdint>
#include <cstring>

static inline float emu_bf16_to_float(std::uint16_t h) {
    const std::uint32_t bits = std::uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

static inline std::uint16_t emu_float_to_bf16(float f) {
    std::uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu)) return std::uint16_t((bits >> 16) | 0x0040u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return std::uint16_t(bits >> 16);
}

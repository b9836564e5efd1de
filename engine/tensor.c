#include "engine/tensor.h"

#include <string.h>

/* Indexed by GGUF type number; a hole is a type we cannot compute with. */
static const struct bw_type_info type_table[] = {
    [BW_TYPE_F32] = {"F32", 1, 4, 1},
    [BW_TYPE_F16] = {"F16", 1, 2, 1},
    [BW_TYPE_Q4_0] = {"Q4_0", BW_QK, sizeof(bw_block_q4_0), 1},
    [BW_TYPE_Q4_1] = {"Q4_1", BW_QK, sizeof(bw_block_q4_1), 1},
    [BW_TYPE_Q5_0] = {"Q5_0", BW_QK, sizeof(bw_block_q5_0), 1},
    [BW_TYPE_Q5_1] = {"Q5_1", BW_QK, sizeof(bw_block_q5_1), 1},
    [BW_TYPE_Q8_0] = {"Q8_0", BW_QK, sizeof(bw_block_q8_0), 1},
    [BW_TYPE_Q8_1] = {"Q8_1", BW_QK, sizeof(bw_block_q8_1), 0},
    [BW_TYPE_Q2_K] = {"Q2_K", BW_QK_K, sizeof(bw_block_q2_k), 1},
    [BW_TYPE_Q3_K] = {"Q3_K", BW_QK_K, sizeof(bw_block_q3_k), 1},
    [BW_TYPE_Q4_K] = {"Q4_K", BW_QK_K, sizeof(bw_block_q4_k), 1},
    [BW_TYPE_Q5_K] = {"Q5_K", BW_QK_K, sizeof(bw_block_q5_k), 1},
    [BW_TYPE_Q6_K] = {"Q6_K", BW_QK_K, sizeof(bw_block_q6_k), 1},
    [BW_TYPE_Q8_K] = {"Q8_K", BW_QK_K, sizeof(bw_block_q8_k), 0},
    [BW_TYPE_IQ4_NL] = {"IQ4_NL", BW_QK, sizeof(bw_block_iq4_nl), 1},
    [BW_TYPE_BF16] = {"BF16", 1, 2, 1},
};

/* The kernels and the file reader both rely on the packed on-disk sizes. */
_Static_assert(sizeof(bw_block_q4_0) == 18, "q4_0 block must be packed");
_Static_assert(sizeof(bw_block_q4_1) == 20, "q4_1 block must be packed");
_Static_assert(sizeof(bw_block_q8_0) == 34, "q8_0 block must be packed");
_Static_assert(sizeof(bw_block_q8_1) == 36, "q8_1 block must be packed");
_Static_assert(sizeof(bw_block_q5_0) == 22, "q5_0 block must be packed");
_Static_assert(sizeof(bw_block_q5_1) == 24, "q5_1 block must be packed");
_Static_assert(sizeof(bw_block_iq4_nl) == 18, "iq4_nl block must be packed");
_Static_assert(sizeof(bw_block_q2_k) == 84, "q2_k block must be packed");
_Static_assert(sizeof(bw_block_q3_k) == 110, "q3_k block must be packed");
_Static_assert(sizeof(bw_block_q4_k) == 144, "q4_k block must be packed");
_Static_assert(sizeof(bw_block_q5_k) == 176, "q5_k block must be packed");
_Static_assert(sizeof(bw_block_q6_k) == 210, "q6_k block must be packed");
_Static_assert(sizeof(bw_block_q8_k) == 292, "q8_k block must be packed");

const int8_t bw_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

const struct bw_type_info *bw_type_info(uint32_t type)
{
    if (type >= sizeof(type_table) / sizeof(type_table[0]) || !type_table[type].name) return NULL;
    return &type_table[type];
}

size_t bw_type_row_bytes(uint32_t type, uint64_t cols)
{
    const struct bw_type_info *ti = bw_type_info(type);
    if (!ti || cols % (uint64_t)ti->block_size != 0) return 0;
    uint64_t blocks = cols / (uint64_t)ti->block_size;
    /* Callers feed this with dimensions read from untrusted files. */
    if (blocks > SIZE_MAX / (uint64_t)ti->block_bytes) return 0;
    return (size_t)(blocks * (uint64_t)ti->block_bytes);
}

static float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

float bw_f16_to_f32(bw_f16 h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;

    if (exp == 0x1f) /* inf, or nan with its payload kept */
        return f32_from_bits(sign | 0x7f800000u | (mant << 13));
    if (exp != 0) return f32_from_bits(sign | ((exp + 112) << 23) | (mant << 13));
    if (mant == 0) return f32_from_bits(sign);
    /* Subnormal half: every one is a normal float, so shift the mantissa up until its leading 1 is the
     * implicit bit. */
    int e = 113;
    while (!(mant & 0x400)) {
        mant <<= 1;
        e--;
    }
    return f32_from_bits(sign | ((uint32_t)e << 23) | ((mant & 0x3ff) << 13));
}

bw_f16 bw_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t exp = (u >> 23) & 0xff;
    uint32_t mant = u & 0x7fffff;

    if (exp == 0xff) /* keep nan a (quiet) nan even when its payload sits only in the low bits */
        return (bw_f16)(sign | 0x7c00 | (mant ? 0x200 | (mant >> 13) : 0));

    int e = (int)exp - 127 + 15;
    if (e >= 0x1f) return (bw_f16)(sign | 0x7c00);
    if (e <= 0) {
        /* Subnormal (or zero) half. Below 2^-25 even rounding up cannot reach the smallest subnormal. */
        if (e < -10) return sign;
        mant |= 0x800000;
        int shift = 14 - e;
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++; /* may carry into the smallest normal: fine */
        return (bw_f16)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    /* A carry out of the mantissa bumps the exponent, up to inf: exactly what rounding should do. */
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (bw_f16)(sign | half);
}

float bw_bf16_to_f32(bw_bf16 h) { return f32_from_bits((uint32_t)h << 16); }

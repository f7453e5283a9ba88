/*
 * progress_format.c - prints harness.c's progress lines for chosen losses, so the test can check
 * the number formatting (line_fixed4) and protocol.parse_progress on values no model produces:
 * NaN, infinities, huge and tiny numbers, rounding carries. Links with stub_model.c (harness.c
 * refers to the model) and harness.c's own main renamed away.
 */
#define main harness_main
#include "harness.c"
#undef main

static const uint32_t loss_bits[] = {
    0x00000000u, /* 0 */
    0x80000000u, /* -0 */
    0x3F800000u, /* 1 */
    0x3FC00000u, /* 1.5 */
    0x3F7FFFFFu, /* 0.99999994: rounds up to 1.0000 */
    0x38D1B717u, /* 1e-4 */
    0x3851B717u, /* 5e-5 */
    0x414587E7u, /* 12.3457 */
    0xC0490FDBu, /* -pi */
    0x4E6E6B28u, /* 1e9 */
    0x5368D4A5u, /* 1e12 */
    0x7F7FFFFFu, /* FLT_MAX */
    0x7F800000u, /* inf */
    0xFF800000u, /* -inf */
    0x7FC00000u, /* nan */
};

int main(void) {
    uint32_t count = (uint32_t)(sizeof(loss_bits) / sizeof(loss_bits[0]));
    for (uint32_t i = 0; i < count; i++) {
        union {
            uint32_t bits;
            float value;
        } loss = {loss_bits[i]};
        progress_step(i + 1u, count, loss.value);
    }
    progress_eval(7u, 4000000000u, 0u, 4294967295u);
    progress("image", 1u, 1u);
    return 0;
}

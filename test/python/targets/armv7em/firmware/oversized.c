/*
 * oversized.c - a program with an arena of ARENA bytes and const weights of WEIGHTS bytes, to test
 * that a firmware which does not fit the STM32F746 fails to link with a clear message.
 */
#include <stdint.h>

#include "qtrain_model_abi.h"

uint8_t arena[ARENA] QTRAIN_ARENA;
const int8_t weights[WEIGHTS] QTRAIN_WEIGHTS = {1};

int main(void) {
    volatile uint32_t i = 3;
    arena[i] = (uint8_t)weights[i];
    return arena[i + 1];
}

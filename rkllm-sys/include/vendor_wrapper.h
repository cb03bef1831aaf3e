/* The vendor rkllm.h uses int32_t, uint8_t, size_t and bool without including
 * the headers that define them; bindgen reads this file first, then the vendor
 * header named by RKLLM_VENDOR_HEADER. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

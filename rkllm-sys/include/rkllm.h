/*
 * rkllm-sys: this crate's own declaration of the Rockchip RKLLM runtime C ABI,
 * version 1.1.1 (identical for 1.1.0 through 1.1.4).
 *
 * Written from the published type, field and function tables of the 1.1.x
 * runtime; it is not the vendor header. Unlike that header it includes the
 * standard headers it needs, so it parses on its own as C or C++.
 *
 * Every size and offset below is asserted in src/layout.rs (Rust, both
 * targets) and in tests/layout_check.c (C, x86_64 and aarch64 compilers).
 */
#ifndef RKLLM_SYS_RKLLM_1_1_1_H
#define RKLLM_SYS_RKLLM_1_1_1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque runtime handle; rkllm_init writes it through an LLMHandle*. */
typedef void *LLMHandle;

/* State passed to the result callback. */
typedef enum {
    RKLLM_RUN_NORMAL = 0,
    RKLLM_RUN_WAITING = 1,
    RKLLM_RUN_FINISH = 2,
    RKLLM_RUN_ERROR = 3,
    RKLLM_RUN_GET_LAST_HIDDEN_LAYER = 4
} LLMCallState;

/* Which member of the RKLLMInput union is valid. */
typedef enum {
    RKLLM_INPUT_PROMPT = 0,
    RKLLM_INPUT_TOKEN = 1,
    RKLLM_INPUT_EMBED = 2,
    RKLLM_INPUT_MULTIMODAL = 3
} RKLLMInputType;

/* What a run produces. */
typedef enum {
    RKLLM_INFER_GENERATE = 0,
    RKLLM_INFER_GET_LAST_HIDDEN_LAYER = 1
} RKLLMInferMode;

/* sizeof 116, align 4 */
typedef struct {
    int32_t base_domain_id;
    uint8_t reserved[112];
} RKLLMExtendParam;

/* sizeof 200, align 8; extend_param at offset 80 */
typedef struct {
    const char *model_path;
    int32_t max_context_len;
    int32_t max_new_tokens;
    int32_t top_k;
    float top_p;
    float temperature;
    float repeat_penalty;
    float frequency_penalty;
    float presence_penalty;
    int32_t mirostat;
    float mirostat_tau;
    float mirostat_eta;
    bool skip_special_token;
    bool is_async;
    const char *img_start;
    const char *img_end;
    const char *img_content;
    RKLLMExtendParam extend_param;
} RKLLMParam;

/* sizeof 24, align 8 */
typedef struct {
    const char *lora_adapter_path;
    const char *lora_adapter_name;
    float scale;
} RKLLMLoraAdapter;

/* sizeof 16: n_tokens x n_embed floats */
typedef struct {
    float *embed;
    size_t n_tokens;
} RKLLMEmbedInput;

/* sizeof 16 */
typedef struct {
    int32_t *input_ids;
    size_t n_tokens;
} RKLLMTokenInput;

/* sizeof 24; prompt is non-const in the 1.1.x ABI */
typedef struct {
    char *prompt;
    float *image_embed;
    size_t n_image_tokens;
} RKLLMMultiModelInput;

/* sizeof 32; the anonymous union starts at offset 8 */
typedef struct {
    RKLLMInputType input_type;
    union {
        const char *prompt_input;
        RKLLMEmbedInput embed_input;
        RKLLMTokenInput token_input;
        RKLLMMultiModelInput multimodal_input;
    };
} RKLLMInput;

/* sizeof 8 */
typedef struct {
    const char *lora_adapter_name;
} RKLLMLoraParam;

/* sizeof 16 */
typedef struct {
    int save_prompt_cache;
    const char *prompt_cache_path;
} RKLLMPromptCacheParam;

/* sizeof 24 */
typedef struct {
    RKLLMInferMode mode;
    RKLLMLoraParam *lora_params;
    RKLLMPromptCacheParam *prompt_cache_params;
} RKLLMInferParam;

/* sizeof 16: num_tokens x embd_size floats, valid only during the callback */
typedef struct {
    const float *hidden_states;
    int embd_size;
    int num_tokens;
} RKLLMResultLastHiddenLayer;

/* sizeof 32 */
typedef struct {
    const char *text;
    int32_t token_id;
    RKLLMResultLastHiddenLayer last_hidden_layer;
} RKLLMResult;

/* Returns void in 1.1.x (int from 1.2.1 on). */
typedef void (*LLMResultCallback)(RKLLMResult *result, void *userdata, LLMCallState state);

/* The vendor header declares this with an empty (unspecified) parameter list. */
RKLLMParam rkllm_createDefaultParam(void);
int rkllm_init(LLMHandle *handle, RKLLMParam *param, LLMResultCallback callback);
int rkllm_load_lora(LLMHandle handle, RKLLMLoraAdapter *lora_adapter);
int rkllm_load_prompt_cache(LLMHandle handle, const char *prompt_cache_path);
int rkllm_release_prompt_cache(LLMHandle handle);
int rkllm_destroy(LLMHandle handle);
int rkllm_run(LLMHandle handle, RKLLMInput *rkllm_input, RKLLMInferParam *rkllm_infer_params, void *userdata);
int rkllm_run_async(LLMHandle handle, RKLLMInput *rkllm_input, RKLLMInferParam *rkllm_infer_params, void *userdata);
int rkllm_abort(LLMHandle handle);
/* Returns 0 while a task is running (inverted sense). */
int rkllm_is_running(LLMHandle handle);

#ifdef __cplusplus
}
#endif

#endif /* RKLLM_SYS_RKLLM_1_1_1_H */

/* Compile-only layout check of include/rkllm.h against the reference numbers of
 * the RKLLM 1.1.1 ABI. CI compiles it with the host gcc (x86_64) and with
 * aarch64-linux-gnu-gcc: `cc -std=c11 -fsyntax-only -I include tests/layout_check.c`. */
#include <stddef.h>
#include "rkllm.h"

#define SIZE(T, n) _Static_assert(sizeof(T) == (n), "sizeof " #T)
#define ALIGN(T, n) _Static_assert(_Alignof(T) == (n), "alignof " #T)
#define OFF(T, f, n) _Static_assert(offsetof(T, f) == (n), "offsetof " #T "." #f)

SIZE(LLMCallState, 4);
SIZE(RKLLMInputType, 4);
SIZE(RKLLMInferMode, 4);

SIZE(RKLLMExtendParam, 116); ALIGN(RKLLMExtendParam, 4);
OFF(RKLLMExtendParam, base_domain_id, 0); OFF(RKLLMExtendParam, reserved, 4);

SIZE(RKLLMParam, 200); ALIGN(RKLLMParam, 8);
OFF(RKLLMParam, model_path, 0); OFF(RKLLMParam, max_context_len, 8);
OFF(RKLLMParam, max_new_tokens, 12); OFF(RKLLMParam, top_k, 16); OFF(RKLLMParam, top_p, 20);
OFF(RKLLMParam, temperature, 24); OFF(RKLLMParam, repeat_penalty, 28);
OFF(RKLLMParam, frequency_penalty, 32); OFF(RKLLMParam, presence_penalty, 36);
OFF(RKLLMParam, mirostat, 40); OFF(RKLLMParam, mirostat_tau, 44); OFF(RKLLMParam, mirostat_eta, 48);
OFF(RKLLMParam, skip_special_token, 52); OFF(RKLLMParam, is_async, 53);
OFF(RKLLMParam, img_start, 56); OFF(RKLLMParam, img_end, 64); OFF(RKLLMParam, img_content, 72);
OFF(RKLLMParam, extend_param, 80);

SIZE(RKLLMLoraAdapter, 24); ALIGN(RKLLMLoraAdapter, 8);
OFF(RKLLMLoraAdapter, lora_adapter_path, 0); OFF(RKLLMLoraAdapter, lora_adapter_name, 8);
OFF(RKLLMLoraAdapter, scale, 16);

SIZE(RKLLMEmbedInput, 16); ALIGN(RKLLMEmbedInput, 8);
OFF(RKLLMEmbedInput, embed, 0); OFF(RKLLMEmbedInput, n_tokens, 8);
SIZE(RKLLMTokenInput, 16); ALIGN(RKLLMTokenInput, 8);
OFF(RKLLMTokenInput, input_ids, 0); OFF(RKLLMTokenInput, n_tokens, 8);
SIZE(RKLLMMultiModelInput, 24); ALIGN(RKLLMMultiModelInput, 8);
OFF(RKLLMMultiModelInput, prompt, 0); OFF(RKLLMMultiModelInput, image_embed, 8);
OFF(RKLLMMultiModelInput, n_image_tokens, 16);

SIZE(RKLLMInput, 32); ALIGN(RKLLMInput, 8);
OFF(RKLLMInput, input_type, 0); OFF(RKLLMInput, prompt_input, 8); OFF(RKLLMInput, embed_input, 8);
OFF(RKLLMInput, token_input, 8); OFF(RKLLMInput, multimodal_input, 8);

SIZE(RKLLMLoraParam, 8); OFF(RKLLMLoraParam, lora_adapter_name, 0);
SIZE(RKLLMPromptCacheParam, 16); ALIGN(RKLLMPromptCacheParam, 8);
OFF(RKLLMPromptCacheParam, save_prompt_cache, 0); OFF(RKLLMPromptCacheParam, prompt_cache_path, 8);
SIZE(RKLLMInferParam, 24); ALIGN(RKLLMInferParam, 8);
OFF(RKLLMInferParam, mode, 0); OFF(RKLLMInferParam, lora_params, 8);
OFF(RKLLMInferParam, prompt_cache_params, 16);

SIZE(RKLLMResultLastHiddenLayer, 16); ALIGN(RKLLMResultLastHiddenLayer, 8);
OFF(RKLLMResultLastHiddenLayer, hidden_states, 0); OFF(RKLLMResultLastHiddenLayer, embd_size, 8);
OFF(RKLLMResultLastHiddenLayer, num_tokens, 12);
SIZE(RKLLMResult, 32); ALIGN(RKLLMResult, 8);
OFF(RKLLMResult, text, 0); OFF(RKLLMResult, token_id, 8); OFF(RKLLMResult, last_hidden_layer, 16);

_Static_assert(RKLLM_RUN_NORMAL == 0 && RKLLM_RUN_WAITING == 1 && RKLLM_RUN_FINISH == 2 &&
               RKLLM_RUN_ERROR == 3 && RKLLM_RUN_GET_LAST_HIDDEN_LAYER == 4, "LLMCallState");
_Static_assert(RKLLM_INPUT_PROMPT == 0 && RKLLM_INPUT_TOKEN == 1 && RKLLM_INPUT_EMBED == 2 &&
               RKLLM_INPUT_MULTIMODAL == 3, "RKLLMInputType");
_Static_assert(RKLLM_INFER_GENERATE == 0 && RKLLM_INFER_GET_LAST_HIDDEN_LAYER == 1, "RKLLMInferMode");

/* What the worker calls its model towards clients and the hive (issue 16): the hive's --model-ref when
 * it passed one (e.g. hf:HuggingFaceTB/SmolLM2-135M-Instruct), else a slug of the model file's name
 * (SmolLM2-135M-Instruct.Q4_1.gguf → smollm2-135m-instruct.q4_1), else, for an engine started on its own
 * without --model here, a slug of the name inside the file. The name inside the file (general.name, often
 * with spaces) is reported beside it as the model's name, never as its id.
 *
 * Owns: the id rule and the slug. /info, the heartbeat, /v1/models, `started` and the OpenAI responses
 * all ask here, so they cannot disagree. */
#ifndef BW_FRONT_MODEL_ID_H
#define BW_FRONT_MODEL_ID_H

#include <stddef.h>

#include "frontend/front.h"

/* The id ("" while nothing names the model yet). Valid until the next call. */
const char *bw_model_id(bw_front *f);
/* The name inside the model file, from the engine's HELLO ("" before one). */
const char *bw_model_name(bw_front *f);
/* Lower-case ASCII letters and digits, '.', '_' and '-'; every other run of bytes becomes one '-'; a
 * ".gguf" ending is dropped. */
void bw_model_slug(const char *in, char *out, size_t cap);

#endif

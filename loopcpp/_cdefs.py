"""C declarations for cffi (ABI mode): the part of llama.h that loopcpp uses, plus llama-loop.h.

Struct layouts are copied field for field from the pinned llama.h; enums inside structs are
written as int32_t (same size and alignment) and callbacks as void *. tests/test_abi.py compiles
the real headers and checks every size and offset here against them.
"""

CDEF = r"""
typedef int32_t llama_pos;
typedef int32_t llama_token;
typedef int32_t llama_seq_id;

struct llama_vocab;
struct llama_model;
struct llama_context;
struct llama_sampler;
struct llama_memory_i;
typedef struct llama_memory_i * llama_memory_t;

typedef struct llama_batch {
    int32_t n_tokens;
    llama_token  *  token;
    float        *  embd;
    llama_pos    *  pos;
    int32_t      *  n_seq_id;
    llama_seq_id ** seq_id;
    int8_t       *  logits;
} llama_batch;

struct llama_model_params {
    void * devices;
    const void * tensor_buft_overrides;
    int32_t n_gpu_layers;
    int32_t split_mode;
    int32_t load_mode;
    int32_t lazy_mode;
    int32_t main_gpu;
    const float * tensor_split;
    void * progress_callback;
    void * progress_callback_user_data;
    const void * kv_overrides;
    bool vocab_only;
    bool check_tensors;
    bool use_extra_bufts;
    bool no_host;
    bool no_alloc;
    bool load_mtp;
};

struct llama_context_params {
    uint32_t n_ctx;
    uint32_t n_batch;
    uint32_t n_ubatch;
    uint32_t n_seq_max;
    uint32_t n_rs_seq;
    uint32_t n_outputs_max;
    uint32_t n_outputs_max_per_seq;
    int32_t  n_threads;
    int32_t  n_threads_batch;
    int32_t  ctx_type;
    int32_t  rope_scaling_type;
    int32_t  pooling_type;
    int32_t  attention_type;
    int32_t  flash_attn_type;
    float    rope_freq_base;
    float    rope_freq_scale;
    float    yarn_ext_factor;
    float    yarn_attn_factor;
    float    yarn_beta_fast;
    float    yarn_beta_slow;
    uint32_t yarn_orig_ctx;
    float    defrag_thold;
    void * cb_eval;
    void * cb_eval_user_data;
    int32_t type_k;
    int32_t type_v;
    void * abort_callback;
    void * abort_callback_data;
    bool embeddings;
    bool offload_kqv;
    bool no_perf;
    bool op_offload;
    bool swa_full;
    bool kv_unified;
    void * samplers;
    size_t n_samplers;
    struct llama_context * ctx_other;
};

typedef struct llama_sampler_chain_params {
    bool no_perf;
} llama_sampler_chain_params;

typedef struct llama_chat_message {
    const char * role;
    const char * content;
} llama_chat_message;

typedef struct llama_logit_bias {
    llama_token token;
    float bias;
} llama_logit_bias;

typedef void (*ggml_log_callback)(int level, const char * text, void * user_data);

void llama_backend_init(void);
void llama_log_set(ggml_log_callback log_callback, void * user_data);
const char * llama_print_system_info(void);
bool llama_supports_gpu_offload(void);
size_t ggml_backend_dev_count(void);
int ggml_backend_dev_type(void * device);
void * ggml_backend_dev_backend_reg(void * device);
const char * ggml_backend_reg_name(void * reg);
void * ggml_backend_dev_get(size_t index);
const char * ggml_backend_dev_name(void * device);
const char * ggml_backend_dev_description(void * device);
const char * ggml_get_name(const void * tensor);
size_t ggml_nbytes(const void * tensor);
int64_t ggml_nelements(const void * tensor);
void ggml_backend_tensor_get(const void * tensor, void * data, size_t offset, size_t size);

struct llama_model_params   llama_model_default_params(void);
struct llama_context_params llama_context_default_params(void);
struct llama_sampler_chain_params llama_sampler_chain_default_params(void);

struct llama_model * llama_model_load_from_file(const char * path_model, struct llama_model_params params);
void llama_model_free(struct llama_model * model);
struct llama_context * llama_init_from_model(struct llama_model * model, struct llama_context_params params);
void llama_free(struct llama_context * ctx);

uint32_t llama_n_ctx(const struct llama_context * ctx);
uint32_t llama_n_batch(const struct llama_context * ctx);
uint32_t llama_n_ubatch(const struct llama_context * ctx);
llama_memory_t llama_get_memory(const struct llama_context * ctx);
void llama_set_n_threads(struct llama_context * ctx, int32_t n_threads, int32_t n_threads_batch);

const struct llama_vocab * llama_model_get_vocab(const struct llama_model * model);
int32_t llama_model_n_ctx_train(const struct llama_model * model);
int32_t llama_model_n_embd(const struct llama_model * model);
int32_t llama_model_n_layer(const struct llama_model * model);
int32_t llama_model_n_head(const struct llama_model * model);
int32_t llama_model_n_head_kv(const struct llama_model * model);
int32_t llama_model_n_swa(const struct llama_model * model);
int32_t llama_model_meta_val_str(const struct llama_model * model, const char * key, char * buf, size_t buf_size);
int32_t llama_model_meta_count(const struct llama_model * model);
int32_t llama_model_meta_key_by_index(const struct llama_model * model, int32_t i, char * buf, size_t buf_size);
int32_t llama_model_meta_val_str_by_index(const struct llama_model * model, int32_t i, char * buf, size_t buf_size);
int32_t llama_model_desc(const struct llama_model * model, char * buf, size_t buf_size);
uint64_t llama_model_size(const struct llama_model * model);
uint64_t llama_model_n_params(const struct llama_model * model);
const char * llama_model_chat_template(const struct llama_model * model, const char * name);
bool llama_model_is_recurrent(const struct llama_model * model);

int32_t llama_vocab_n_tokens(const struct llama_vocab * vocab);
llama_token llama_vocab_bos(const struct llama_vocab * vocab);
llama_token llama_vocab_eos(const struct llama_vocab * vocab);
bool llama_vocab_is_eog(const struct llama_vocab * vocab, llama_token token);
bool llama_vocab_get_add_bos(const struct llama_vocab * vocab);
int32_t llama_tokenize(const struct llama_vocab * vocab, const char * text, int32_t text_len,
                       llama_token * tokens, int32_t n_tokens_max, bool add_special, bool parse_special);
int32_t llama_token_to_piece(const struct llama_vocab * vocab, llama_token token, char * buf,
                             int32_t length, int32_t lstrip, bool special);
int32_t llama_detokenize(const struct llama_vocab * vocab, const llama_token * tokens, int32_t n_tokens,
                         char * text, int32_t text_len_max, bool remove_special, bool unparse_special);
int32_t llama_chat_apply_template(const char * tmpl, const struct llama_chat_message * chat, size_t n_msg,
                                  bool add_ass, char * buf, int32_t length);

struct llama_batch llama_batch_init(int32_t n_tokens, int32_t embd, int32_t n_seq_max);
void llama_batch_free(struct llama_batch batch);
int32_t llama_decode(struct llama_context * ctx, struct llama_batch batch);
float * llama_get_logits_ith(struct llama_context * ctx, int32_t i);

void llama_memory_clear(llama_memory_t mem, bool data);
bool llama_memory_seq_rm(llama_memory_t mem, llama_seq_id seq_id, llama_pos p0, llama_pos p1);
llama_pos llama_memory_seq_pos_max(llama_memory_t mem, llama_seq_id seq_id);
size_t llama_state_seq_get_size(struct llama_context * ctx, llama_seq_id seq_id);
size_t llama_state_seq_get_data(struct llama_context * ctx, uint8_t * dst, size_t size, llama_seq_id seq_id);
size_t llama_state_seq_set_data(struct llama_context * ctx, const uint8_t * src, size_t size, llama_seq_id dest_seq_id);
size_t llama_state_get_size(struct llama_context * ctx);
size_t llama_state_get_data(struct llama_context * ctx, uint8_t * dst, size_t size);
size_t llama_state_set_data(struct llama_context * ctx, const uint8_t * src, size_t size);
float * llama_get_embeddings_seq(struct llama_context * ctx, llama_seq_id seq_id);
float * llama_get_embeddings_ith(struct llama_context * ctx, int32_t i);
int32_t llama_pooling_type(const struct llama_context * ctx);
void llama_set_abort_callback(struct llama_context * ctx, void * abort_callback, void * abort_callback_data);
int32_t llama_chat_builtin_templates(const char ** output, size_t len);

struct llama_sampler * llama_sampler_chain_init(struct llama_sampler_chain_params params);
void llama_sampler_chain_add(struct llama_sampler * chain, struct llama_sampler * smpl);
struct llama_sampler * llama_sampler_init_greedy(void);
struct llama_sampler * llama_sampler_init_dist(uint32_t seed);
struct llama_sampler * llama_sampler_init_top_k(int32_t k);
struct llama_sampler * llama_sampler_init_top_p(float p, size_t min_keep);
struct llama_sampler * llama_sampler_init_min_p(float p, size_t min_keep);
struct llama_sampler * llama_sampler_init_temp(float t);
struct llama_sampler * llama_sampler_init_typical(float p, size_t min_keep);
struct llama_sampler * llama_sampler_init_mirostat(int32_t n_vocab, uint32_t seed, float tau, float eta, int32_t m);
struct llama_sampler * llama_sampler_init_mirostat_v2(uint32_t seed, float tau, float eta);
struct llama_sampler * llama_sampler_init_grammar(const struct llama_vocab * vocab, const char * grammar_str,
                                                  const char * grammar_root);
struct llama_sampler * llama_sampler_init_penalties(int32_t n_vocab, int32_t penalty_last_n, float penalty_repeat,
                                                    float penalty_freq, float penalty_present);
struct llama_sampler * llama_sampler_init_logit_bias(int32_t n_vocab, int32_t n_logit_bias,
                                                     const llama_logit_bias * logit_bias);
llama_token llama_sampler_sample(struct llama_sampler * smpl, struct llama_context * ctx, int32_t idx);
void llama_sampler_accept(struct llama_sampler * smpl, llama_token token);
void llama_sampler_reset(struct llama_sampler * smpl);
void llama_sampler_free(struct llama_sampler * smpl);

/* llama-loop.h */
struct llama_loop_params {
    int32_t start;
    int32_t end;
    int32_t n_steps;
    int32_t mode;
    int32_t integrator;
    float   beta;
    int32_t kv;
    int32_t decode;
    int32_t decode_n;
    bool    freeze_routing;
};
struct llama_loop_params llama_loop_default_params(const struct llama_model * model);
int32_t llama_loop_parse(const struct llama_model * model, const char * spec, struct llama_loop_params * params);
int32_t llama_loop_format(const struct llama_loop_params * params, char * buf, size_t size);
int32_t llama_loop_validate(const struct llama_model * model, const struct llama_loop_params * params);
int32_t llama_loop_set(struct llama_context * ctx, const struct llama_loop_params * params);
int32_t llama_loop_get(const struct llama_context * ctx, struct llama_loop_params * params);
void llama_loop_clear(struct llama_context * ctx);
int32_t llama_loop_seq_set(struct llama_context * ctx, llama_seq_id seq, bool loop, int32_t decode,
                           int32_t decode_n);
int32_t llama_loop_seq_set_spec(struct llama_context * ctx, llama_seq_id seq, const char * spec);
int32_t llama_loop_seq_reset(struct llama_context * ctx, llama_seq_id seq);
int32_t llama_loop_seq_verify(struct llama_context * ctx, llama_seq_id seq, bool verify);
const char * llama_loop_last_error(void);
bool llama_loop_arch_supported(const struct llama_model * model);
const char * llama_loop_arch_name(int32_t i);
int32_t llama_loop_arch_kind(int32_t i);
const char * llama_loop_version(void);
const char * llama_loop_llama_commit(void);
int32_t llama_loop_api_version(void);
struct llama_perf_context_data {
    double t_start_ms;
    double t_load_ms;
    double t_p_eval_ms;
    double t_eval_ms;
    int32_t n_p_eval;
    int32_t n_eval;
    int32_t n_reused;
};
struct llama_perf_context_data llama_perf_context(const struct llama_context * ctx);
void llama_perf_context_reset(struct llama_context * ctx);
int32_t llama_loop_rpc_add_server(const char * endpoint, void ** devices, size_t n_max);
struct llama_loop_memory {
    size_t   model;
    size_t   context;
    size_t   compute;
    size_t   graph_meta;
    uint32_t graph_max_nodes;
};
int32_t llama_loop_get_memory(const struct llama_context * ctx, struct llama_loop_memory * out);
bool llama_loop_abort_on_flag(void * flag);
int32_t llama_loop_sampler_sample(struct llama_sampler * smpl, struct llama_context * ctx, int32_t idx,
                                  llama_token * token);
"""

# (struct name, fields) checked against the real headers by tests/test_abi.py
CHECKED_STRUCTS = [
    "llama_batch",
    "llama_model_params",
    "llama_context_params",
    "llama_sampler_chain_params",
    "llama_chat_message",
    "llama_logit_bias",
    "llama_loop_params",
    "llama_loop_memory",
    "llama_perf_context_data",
]

// The loop API (include/llama-loop.h): parameters, spec strings, validation, and the per-context
// state that the patched llama_context consults.
#include "llama-loop.h"
#include "llama-loop-state.h"
#include "llama-hardening.h"
#include "llama-loop-graph.h"

#include "llama-adapter.h"
#include "llama-batch.h"
#include "llama-context.h"
#include "llama-ext.h"
#include "llama-impl.h"
#include "llama-model.h"

#include <cmath>
#include <cstdio>
#include <iomanip>
#include <locale>
#include <sstream>
#include <cstdlib>
#include <algorithm>
#include <array>
#include <mutex>
#include <unordered_map>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

thread_local std::string g_last_error;

int32_t fail(int32_t code, const std::string & msg) {
    g_last_error = msg;
    return code;
}

int32_t ok() {
    g_last_error.clear();
    return LLAMA_LOOP_OK;
}

bool is_moe(const llama_model & model) { return model.hparams.n_expert > 0; }

int32_t n_layer_of(const llama_model & model) { return (int32_t) model.hparams.n_layer(); }

// The depth-fraction rule: W = min(4, N) layers whose centre is nearest 0.47 N (ties: lower start).
void default_window(int32_t n_layer, int32_t & start, int32_t & end) {
    const int32_t w = std::min<int32_t>(4, n_layer);
    const double target = 0.47 * n_layer;
    int32_t best = 0;
    double best_dist = 1e30;
    for (int32_t s = 0; s + w <= n_layer; ++s) {
        const double dist = std::fabs(s + (w - 1) / 2.0 - target);
        if (dist < best_dist - 1e-9) {
            best = s;
            best_dist = dist;
        }
    }
    start = best;
    end = best + w - 1;
}

// Fills the model-dependent parts left open (default window, auto mode).
void resolve(const llama_model & model, llama_loop_params & p) {
    if (p.start < 0 && p.end < 0) {
        default_window(n_layer_of(model), p.start, p.end);
    }
    if (p.mode == LLAMA_LOOP_MODE_AUTO) {
        p.mode = is_moe(model) ? LLAMA_LOOP_MODE_LAYER : LLAMA_LOOP_MODE_BLOCK;
    }
    if (p.mode == LLAMA_LOOP_MODE_LAYER) {
        p.freeze_routing = false; // layer mode routes each MoE layer once anyway
    }
}

bool parse_int(const std::string & s, int32_t & out) {
    if (s.empty() || s.size() > 9) {
        return false;
    }
    for (char c : s) {
        if (c < '0' || c > '9') {
            return false;
        }
    }
    out = (int32_t) std::atoi(s.c_str());
    return true;
}

// Numbers in spec strings are read and written in the C locale whatever the host's locale is: a
// German-locale process must read "beta=0.5" as one half, and write it so.
bool parse_float(const std::string & s, float & out) {
    if (s.empty() || s.find_first_of(" \t") != std::string::npos) {
        return false;
    }
    std::istringstream in(s);
    in.imbue(std::locale::classic());
    in >> out;
    return !in.fail() && in.peek() == EOF && std::isfinite(out);
}

std::string format_float(float v) {
    for (int precision : { 6, 9 }) { // short when that round-trips, else exact
        std::ostringstream out;
        out.imbue(std::locale::classic());
        out << std::setprecision(precision) << v;
        float back = 0.0f;
        if (parse_float(out.str(), back) && back == v) {
            return out.str();
        }
    }
    return std::to_string(v);
}

std::string trim(const std::string & s) {
    const size_t a = s.find_first_not_of(" \t");
    const size_t b = s.find_last_not_of(" \t");
    return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

// "S:E", "S:ExK", "auto", "autoxK" or "off".
bool parse_window(const std::string & item, llama_loop_params & p) {
    if (item == "off") {
        p.n_steps = 1;
        return true;
    }
    std::string win = item;
    const size_t x = item.find('x');
    if (x != std::string::npos) {
        win = item.substr(0, x);
        if (!parse_int(item.substr(x + 1), p.n_steps)) {
            return false;
        }
    }
    if (win == "auto") {
        p.start = p.end = -1;
        return true;
    }
    const size_t colon = win.find(':');
    return colon != std::string::npos &&
           parse_int(win.substr(0, colon), p.start) &&
           parse_int(win.substr(colon + 1), p.end);
}

// The option groups of a spec string; each may be given once.
enum option_group { OPT_MODE, OPT_INTEGRATOR, OPT_BETA, OPT_KV, OPT_DECODE, OPT_FREEZE, OPT_NONE };

// Parses one option into p; returns its group, or OPT_NONE if it is not an option.
option_group parse_option(const std::string & item, llama_loop_params & p) {
    const size_t eq = item.find('=');
    const std::string key = item.substr(0, eq);
    const std::string val = eq == std::string::npos ? "" : item.substr(eq + 1);
    if (eq == std::string::npos) {
        if (key == "block")  { p.mode = LLAMA_LOOP_MODE_BLOCK;  return OPT_MODE; }
        if (key == "layer")  { p.mode = LLAMA_LOOP_MODE_LAYER;  return OPT_MODE; }
        if (key == "naive")  { p.integrator = LLAMA_LOOP_INTEGRATOR_NAIVE; return OPT_INTEGRATOR; }
        if (key == "euler")  { p.integrator = LLAMA_LOOP_INTEGRATOR_EULER; return OPT_INTEGRATOR; }
        if (key == "rk")     { p.integrator = LLAMA_LOOP_INTEGRATOR_RK;    return OPT_INTEGRATOR; }
        if (key == "freeze") { p.freeze_routing = true; return OPT_FREEZE; }
        return OPT_NONE;
    }
    if (key == "beta") {
        return parse_float(val, p.beta) ? OPT_BETA : OPT_NONE;
    }
    if (key == "kv") {
        if (val == "first") { p.kv = LLAMA_LOOP_KV_FIRST; return OPT_KV; }
        if (val == "last")  { p.kv = LLAMA_LOOP_KV_LAST;  return OPT_KV; }
        return OPT_NONE;
    }
    if (key == "decode") {
        if (val == "bypass") { p.decode = LLAMA_LOOP_DECODE_BYPASS; return OPT_DECODE; }
        if (val == "full")   { p.decode = LLAMA_LOOP_DECODE_FULL;   return OPT_DECODE; }
        if (val.rfind("first:", 0) == 0) {
            p.decode = LLAMA_LOOP_DECODE_FIRST_N;
            return parse_int(val.substr(6), p.decode_n) ? OPT_DECODE : OPT_NONE;
        }
        return OPT_NONE;
    }
    return OPT_NONE;
}

// Range checks that need no model.
int32_t check_values(const llama_loop_params & p) {
    if (p.n_steps < 1 || p.n_steps > LLAMA_LOOP_MAX_STEPS) {
        return fail(LLAMA_LOOP_ERR_INVALID, "K = " + std::to_string(p.n_steps) + " is out of range: use 1 (off) to " +
                    std::to_string(LLAMA_LOOP_MAX_STEPS));
    }
    if (!(p.beta >= 0.0f && p.beta <= 1.0f)) {
        return fail(LLAMA_LOOP_ERR_INVALID, "beta = " + std::to_string(p.beta) + " is outside [0, 1]");
    }
    if (p.mode < LLAMA_LOOP_MODE_AUTO || p.mode > LLAMA_LOOP_MODE_LAYER) {
        return fail(LLAMA_LOOP_ERR_INVALID, "mode " + std::to_string((int) p.mode) + " is not auto, block or layer");
    }
    if (p.integrator < LLAMA_LOOP_INTEGRATOR_NAIVE || p.integrator > LLAMA_LOOP_INTEGRATOR_RK) {
        return fail(LLAMA_LOOP_ERR_INVALID, "integrator " + std::to_string((int) p.integrator) + " is not naive, euler or rk");
    }
    if (p.kv < LLAMA_LOOP_KV_FIRST || p.kv > LLAMA_LOOP_KV_LAST) {
        return fail(LLAMA_LOOP_ERR_INVALID, "cache policy " + std::to_string((int) p.kv) + " is not first or last");
    }
    if (p.decode < LLAMA_LOOP_DECODE_BYPASS || p.decode > LLAMA_LOOP_DECODE_FIRST_N) {
        return fail(LLAMA_LOOP_ERR_INVALID, "decode mode " + std::to_string((int) p.decode) + " is not bypass, full or first:N");
    }
    if (p.decode_n < 0) {
        return fail(LLAMA_LOOP_ERR_INVALID, "decode=first:N needs N >= 0, got " + std::to_string(p.decode_n));
    }
    if ((p.start < 0) != (p.end < 0) || p.start < -1 || p.end < -1) {
        return fail(LLAMA_LOOP_ERR_INVALID, "window " + std::to_string(p.start) + ":" + std::to_string(p.end) +
                    " is invalid: give both ends (>= 0) or -1:-1 for the default window");
    }
    if (p.start > p.end) {
        return fail(LLAMA_LOOP_ERR_INVALID, "window " + std::to_string(p.start) + ":" + std::to_string(p.end) +
                    " has start > end");
    }
    return ok();
}

int32_t set_loop(llama_context * ctx, const llama_loop_params * params, bool reserve);

// The recipe from LOOPCPP_LOOP or the model metadata, logged and applied to ctx. One that does not
// fit this model (a window outside it, an architecture that cannot loop) is ignored with a
// warning: a global LOOPCPP_LOOP must not break every model it does not fit, and the API's own
// choice (llama_loop_set after creation) still wins.
void apply_recipe(llama_context * ctx, const std::string & spec, const char * source) {
    const llama_model & model = ctx->get_model();
    llama_loop_params p;
    if (llama_loop_parse(&model, spec.c_str(), &p) != LLAMA_LOOP_OK ||
        set_loop(ctx, &p, /*reserve =*/ false) != LLAMA_LOOP_OK) {
        LLAMA_LOG_WARN("loopcpp: ignoring the loop from %s for this model: %s\n", source, g_last_error.c_str());
        return;
    }
    char buf[256];
    llama_loop_format(&ctx->get_cparams().loop.params, buf, sizeof(buf));
    LLAMA_LOG_INFO("loopcpp: loop %s (from %s)\n", buf, source);
}

int32_t set_loop(llama_context * ctx, const llama_loop_params * params, bool reserve) {
    if (!ctx || !params) {
        return fail(LLAMA_LOOP_ERR_INVALID, "ctx and params must not be NULL");
    }
    const llama_model & model = ctx->get_model();
    const int32_t rc = llama_loop_validate(&model, params);
    if (rc != LLAMA_LOOP_OK) {
        return rc;
    }
    llama_loop_params p = *params;
    if (p.n_steps > 1) {
        if (ctx->get_cparams().training) {
            return fail(LLAMA_LOOP_ERR_UNSUPPORTED, "looping is not available while training");
        }
        // the cache policy replays attention writes, which report through llama_kv_cache_context (sparse
        // attention's indexer cache too); recurrent state has no such writes to replay
        if (llama_model_is_recurrent(&model) || llama_model_is_hybrid(&model)) {
            return fail(LLAMA_LOOP_ERR_UNSUPPORTED, "looping needs a plain KV cache; recurrent and hybrid memory are not supported");
        }
        resolve(model, p);
    } else {
        p = llama_loop_off_params();
    }
    llama_loop_recipe recipe;
    recipe.params = p;
    const llama_loop_recipe prev = ctx->get_cparams().loop;
    ctx->set_loop(recipe);
    if (reserve) {
        // allocate the looped graph now, where a failure can still be undone, not inside llama_decode
        llama_assert_scope assert_scope;
        try {
            ctx->sched_reserve();
        } catch (const std::exception & e) {
            ctx->set_loop(prev);
            try {
                ctx->sched_reserve();
            } catch (const std::exception &) {
                // the previous graph fitted before; if it no longer does, llama_decode reports it
            }
            return fail(LLAMA_LOOP_ERR_ALLOC, std::string("cannot allocate the looped graph (the context keeps its "
                        "previous loop): ") + e.what());
        }
    }
    ctx->loop_seqs.reset_choices(-1); // per-sequence choices were made within the previous loop
    return ok();
}

} // namespace

//
// internals used by the patched llama.cpp
//

llama_loop_params llama_loop_off_params() {
    llama_loop_params p = llama_loop_default_params(nullptr);
    p.n_steps = 1;
    return p;
}

static_assert(LLAMA_LOOP_MAX_SEQ == LLAMA_MAX_SEQ, "the loop state tracks every sequence id");

bool llama_loop_decision::row_loops(const llama_ubatch & ubatch, uint32_t i) const {
    for (int32_t j = 0; j < ubatch.n_seq_id[i]; ++j) {
        if (seq_loops[ubatch.seq_id[i][j]]) {
            return true;
        }
    }
    return false;
}

void llama_loop_sequences::reset_choices(llama_seq_id seq) {
    if (seq < 0) {
        off.reset();
        verify.reset();
        decode.fill(0);
        return;
    }
    off[seq]    = false;
    verify[seq] = false;
    decode[seq] = 0;
}

llama_loop_decision llama_loop_begin_ubatch(const llama_loop_recipe & recipe, llama_loop_sequences & seqs,
                                            const llama_memory_i * memory, const llama_ubatch & ubatch) {
    seqs.next.clear();
    llama_loop_decision d;
    if (!recipe.active()) {
        d.rows = LLAMA_LOOP_ROWS_NONE;
        return d;
    }
    // a sequence is in its prompt phase when it contributes two or more rows to this ubatch
    // (unless they verify a draft)
    std::array<uint32_t, LLAMA_LOOP_MAX_SEQ> n_rows {};
    std::array<llama_pos, LLAMA_LOOP_MAX_SEQ> pos_min, pos_max;
    pos_min.fill(std::numeric_limits<llama_pos>::max());
    pos_max.fill(std::numeric_limits<llama_pos>::min());
    for (uint32_t i = 0; i < ubatch.n_tokens; ++i) {
        for (int32_t j = 0; j < ubatch.n_seq_id[i]; ++j) {
            const llama_seq_id s = ubatch.seq_id[i][j];
            n_rows[s]++;
            pos_min[s] = std::min(pos_min[s], ubatch.pos[i]);
            pos_max[s] = std::max(pos_max[s], ubatch.pos[i]);
        }
    }
    const llama_loop_params & p = recipe.params;
    for (uint32_t u = 0; u < ubatch.n_seqs_unq; ++u) {
        const llama_seq_id s = ubatch.seq_id_unq[u];
        const auto decode   = seqs.decode[s] ? (llama_loop_decode) (seqs.decode[s] - 1) : p.decode;
        const auto decode_n = seqs.decode[s] ? seqs.decode_n[s] : p.decode_n;
        // the memory already holds this ubatch's cells: nothing before them means a fresh sequence
        const bool fresh = memory && memory->seq_pos_min(s) >= pos_min[s];
        uint32_t n_decode = fresh ? 0 : seqs.n_decode[s];
        if (!fresh && pos_min[s] < seqs.pos_next[s]) {
            // rows were removed since the last ubatch (a rejected draft): they no longer count
            n_decode -= std::min<uint32_t>(n_decode, (uint32_t) (seqs.pos_next[s] - pos_min[s]));
        }
        bool loops = true;
        if (n_rows[s] >= 2 && !seqs.verify[s]) {
            seqs.next.push_back({ s, 0, pos_max[s] + 1 });
        } else {
            loops = decode == LLAMA_LOOP_DECODE_FULL ||
                    (decode == LLAMA_LOOP_DECODE_FIRST_N && n_decode < (uint32_t) decode_n);
            seqs.next.push_back({ s, n_decode + n_rows[s], pos_max[s] + 1 });
        }
        d.seq_loops[s] = loops && !seqs.off[s];
    }
    uint32_t n_looped = 0;
    for (uint32_t i = 0; i < ubatch.n_tokens; ++i) {
        n_looped += d.row_loops(ubatch, i);
    }
    d.rows = n_looped == 0                ? LLAMA_LOOP_ROWS_NONE :
             n_looped == ubatch.n_tokens ? LLAMA_LOOP_ROWS_ALL  : LLAMA_LOOP_ROWS_SOME;
    return d;
}

void llama_loop_end_ubatch(llama_loop_sequences & seqs) {
    for (const auto & a : seqs.next) {
        seqs.n_decode[a.seq] = a.n_decode;
        seqs.pos_next[a.seq] = a.pos_next;
    }
    seqs.next.clear();
}

llama_loop_decision llama_loop_begin_reserve(const llama_loop_recipe & recipe) {
    llama_loop_decision d;
    d.rows = recipe.active() ? LLAMA_LOOP_ROWS_SOME : LLAMA_LOOP_ROWS_NONE;
    return d;
}

// Same recipe but for the decode mode: the parts of a loop that shape its graph.
static bool same_recipe(const llama_loop_params & p, const llama_loop_params & q) {
    return p.start == q.start && p.end == q.end && p.n_steps == q.n_steps && p.mode == q.mode &&
           p.integrator == q.integrator && p.beta == q.beta && p.kv == q.kv &&
           p.freeze_routing == q.freeze_routing;
}

bool llama_loop_same_graph(const llama_loop_recipe & a, const llama_loop_decision & da,
                           const llama_loop_recipe & b, const llama_loop_decision & db) {
    if (a.active() != b.active() || da.rows != db.rows) {
        return false;
    }
    return !a.active() || same_recipe(a.params, b.params);
}

uint32_t llama_loop_extra_nodes(const llama_loop_recipe & recipe, const llama_model & model) {
    const uint64_t n_layer = model.hparams.n_layer();
    if (!recipe.active() || n_layer == 0) {
        return 0;
    }
    // llama.cpp budgets 8 nodes per weight tensor (plus LoRA nodes) for the whole graph; one
    // evaluation of a window layer needs at most its layer's share of that. Per window layer: K
    // evaluations plus one shadow/stash evaluation, plus integrator, row-select and cache-restore
    // nodes. (Not the unlooped budget's share: its floor of 1024 nodes would make a small
    // model's share many times what a layer uses, at every K.)
    uint64_t total = 8ull * model.n_tensors();
    for (const auto & lora : model.loras) {
        total += lora->get_n_nodes();
    }
    const uint64_t per_layer = total / n_layer + 16;
    const uint64_t width     = recipe.params.end - recipe.params.start + 1;
    const uint64_t extra     = width * (recipe.params.n_steps + 1) * per_layer + 16 * (uint64_t) recipe.params.n_steps;
    return (uint32_t) std::min<uint64_t>(extra, UINT32_MAX / 2);
}

void llama_loop_init_context(llama_context * ctx) {
    if (const char * env = std::getenv("LOOPCPP_LOOP")) {
        if (*env) {
            apply_recipe(ctx, env, "LOOPCPP_LOOP");
        }
        return;
    }
    const auto & kv = ctx->get_model().gguf_kv;
    const auto it = kv.find("loopcpp.loop");
    if (it != kv.end()) {
        apply_recipe(ctx, it->second, "GGUF metadata loopcpp.loop");
    }
}

void llama_loop_stop_for_training(llama_context * ctx) {
    if (ctx->get_cparams().loop.active()) {
        LLAMA_LOG_WARN("loopcpp: training runs the unmodified model: the context's loop is turned off\n");
        const llama_loop_params off = llama_loop_off_params();
        set_loop(ctx, &off, /*reserve =*/ false); // opt_init reserves the training graph itself
    }
}

//
// public API
//

llama_loop_params llama_loop_default_params(const llama_model * model) {
    llama_loop_params p;
    p.start          = -1;
    p.end            = -1;
    p.n_steps        = 3;
    p.mode           = LLAMA_LOOP_MODE_AUTO;
    p.integrator     = LLAMA_LOOP_INTEGRATOR_RK;
    p.beta           = 0.5f;
    p.kv             = LLAMA_LOOP_KV_FIRST;
    p.decode         = LLAMA_LOOP_DECODE_BYPASS;
    p.decode_n       = 0;
    p.freeze_routing = false;
    if (model) {
        resolve(*model, p);
    }
    return p;
}

int32_t llama_loop_parse(const llama_model * model, const char * spec, llama_loop_params * params) {
    if (!spec || !params) {
        return fail(LLAMA_LOOP_ERR_INVALID, "spec and params must not be NULL");
    }
    llama_loop_params p = llama_loop_default_params(nullptr);
    const std::string s = spec;
    std::vector<std::string> items;
    size_t pos = 0;
    while (true) {
        const size_t comma = s.find(',', pos);
        items.push_back(trim(s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos)));
        if (comma == std::string::npos) {
            break;
        }
        pos = comma + 1;
    }
    const std::string prefix = "loop spec \"" + s + "\": ";
    if (items[0].empty()) {
        return fail(LLAMA_LOOP_ERR_INVALID, prefix + "empty window; expected S:ExK (e.g. 15:18x3), auto or off");
    }
    if (!parse_window(items[0], p)) {
        return fail(LLAMA_LOOP_ERR_INVALID, prefix + "bad window \"" + items[0] +
                    "\"; expected S:E or S:ExK (e.g. 15:18x3), auto, autoxK or off");
    }
    std::string given[OPT_NONE]; // the item that set each group
    for (size_t i = 1; i < items.size(); ++i) {
        const option_group g = parse_option(items[i], p);
        if (g == OPT_NONE) {
            return fail(LLAMA_LOOP_ERR_INVALID, prefix + "bad option \"" + items[i] +
                        "\"; expected block, layer, naive, euler, rk, beta=F, kv=first|last, "
                        "decode=bypass|full|first:N or freeze");
        }
        if (!given[g].empty()) {
            return fail(LLAMA_LOOP_ERR_INVALID, prefix + "\"" + items[i] + "\" " +
                        (given[g] == items[i] ? "is repeated" : "conflicts with \"" + given[g] + "\""));
        }
        given[g] = items[i];
    }
    // options that would do nothing are refused rather than silently ignored
    if (!given[OPT_BETA].empty() && p.integrator != LLAMA_LOOP_INTEGRATOR_RK) {
        return fail(LLAMA_LOOP_ERR_INVALID, prefix + "\"" + given[OPT_BETA] + "\" only applies to the rk integrator");
    }
    if (!given[OPT_FREEZE].empty() && p.mode == LLAMA_LOOP_MODE_LAYER) {
        return fail(LLAMA_LOOP_ERR_INVALID, prefix + "\"freeze\" applies to block mode; layer mode always "
                    "routes each MoE layer once");
    }
    if (check_values(p) != LLAMA_LOOP_OK) {
        return fail(LLAMA_LOOP_ERR_INVALID, prefix + g_last_error);
    }
    if (model) {
        resolve(*model, p);
    }
    *params = p;
    return ok();
}

int32_t llama_loop_format(const llama_loop_params * p, char * buf, size_t size) {
    if (!p) {
        return fail(LLAMA_LOOP_ERR_INVALID, "params must not be NULL");
    }
    if (check_values(*p) != LLAMA_LOOP_OK) { // the name tables below are indexed by the enums
        return LLAMA_LOOP_ERR_INVALID;
    }
    std::string s;
    if (p->n_steps <= 1) {
        s = "off";
    } else {
        s = p->start < 0 ? std::string("auto") : std::to_string(p->start) + ":" + std::to_string(p->end);
        s += "x" + std::to_string(p->n_steps);
        if (p->mode != LLAMA_LOOP_MODE_AUTO) {
            s += p->mode == LLAMA_LOOP_MODE_BLOCK ? ",block" : ",layer";
        }
        const char * integrators[] = { "naive", "euler", "rk" };
        s += std::string(",") + integrators[p->integrator];
        if (p->integrator == LLAMA_LOOP_INTEGRATOR_RK) {
            s += ",beta=" + format_float(p->beta);
        }
        s += p->kv == LLAMA_LOOP_KV_FIRST ? ",kv=first" : ",kv=last";
        switch (p->decode) {
            case LLAMA_LOOP_DECODE_BYPASS:  s += ",decode=bypass"; break;
            case LLAMA_LOOP_DECODE_FULL:    s += ",decode=full";   break;
            case LLAMA_LOOP_DECODE_FIRST_N: s += ",decode=first:" + std::to_string(p->decode_n); break;
        }
        if (p->freeze_routing && p->mode != LLAMA_LOOP_MODE_LAYER) { // layer mode always freezes
            s += ",freeze";
        }
    }
    if (buf && size > 0) {
        snprintf(buf, size, "%s", s.c_str());
    }
    return (int32_t) s.size();
}

// The architectures whose graph builder runs its layers through build_layer_stack, listed at
// configure time from the patched builders themselves (csrc/loop_archs.py): no hand-kept list.
static const llm_arch k_looping_archs[] = {
#include "llama-loop-archs.inc"
};

bool llama_loop_arch_supported(const llama_model * model) {
    if (!model || model->hparams.n_layer() == 0) {
        return false; // a vocabulary-only model has no layers to loop
    }
    return std::find(std::begin(k_looping_archs), std::end(k_looping_archs), model->arch) != std::end(k_looping_archs);
}

const char * llama_loop_arch_name(int32_t i) {
    return i >= 0 && i < LLM_ARCH_UNKNOWN ? llm_arch_name((llm_arch) i) : nullptr;
}

int32_t llama_loop_arch_kind(int32_t i) {
    if (i < 0 || i >= LLM_ARCH_UNKNOWN) {
        return -1;
    }
    const llm_arch arch = (llm_arch) i;
    return llm_arch_is_hybrid(arch)    ? LLAMA_LOOP_ARCH_HYBRID
         : llm_arch_is_recurrent(arch) ? LLAMA_LOOP_ARCH_RECURRENT
         : llm_arch_is_diffusion(arch) ? LLAMA_LOOP_ARCH_DIFFUSION
         :                               LLAMA_LOOP_ARCH_LAYERED;
}

// Why an architecture's builder has no loop hook, in the terms a user can act on.
static std::string unsupported_reason(const llama_model & model) {
    if (llama_model_is_hybrid(&model)) {
        return "it mixes attention with recurrent layers, whose state the loop cannot re-read like a K/V cache";
    }
    if (llama_model_is_recurrent(&model)) {
        return "it is recurrent: its state is not a K/V cache the loop can re-read";
    }
    if (llama_model_has_encoder(&model) || !model.hparams.causal_attn) {
        return "it is an encoder (non-causal attention), which loopcpp does not loop";
    }
    if (llama_model_is_diffusion(&model)) {
        return "it is a diffusion model, which loopcpp does not loop";
    }
    if (model.arch == LLM_ARCH_GEMMA4_ASSISTANT) {
        return "it is a draft head that attends to its target model's cache and runs only inside the target's context";
    }
    if (model.arch == LLM_ARCH_HRM_TEXT) {
        return "it already re-runs its layers (low and high stacks in hierarchical cycles), so there is no single layer stack to loop";
    }
    if (model.hparams.n_layer() == 0) {
        return "a vocabulary-only model has no layers";
    }
    return "its graph builder is not converted to build_layer_stack yet (docs/architectures.md lists those that are)";
}

// A layer that leaves state outside the residual for later layers cannot be in the window when a
// layer after it reads that state: the loop's extra evaluations (and the cache policies' side
// chains) would overwrite it. glm-dsa's shared indexer layers reuse the top-k selection of the full
// indexer layer before them (GLM-5.2; GLM-5 and 5.1 have full indexers only).
static bool leaves_carried_state(const llama_model & model, int32_t il) {
    return model.arch == LLM_ARCH_GLM_DSA && il + 1 < n_layer_of(model) &&
           model.hparams.is_indexer_full(il) && !model.hparams.is_indexer_full(il + 1);
}

// The first layer of [start, end] that leaves carried state, or -1.
static int32_t first_carried_state_layer(const llama_model & model, int32_t start, int32_t end) {
    for (int32_t il = start; il <= end; ++il) {
        if (leaves_carried_state(model, il)) {
            return il;
        }
    }
    return -1;
}

// Why the window [start, end] cannot loop because of carried state, with the nearest window of the
// same width that can; empty when it can.
static std::string carried_state_conflict(const llama_model & model, int32_t start, int32_t end) {
    const int32_t il = first_carried_state_layer(model, start, end);
    if (il < 0) {
        return "";
    }
    const std::string why = "layer " + std::to_string(il) + " is a full indexer layer whose top-k selection the "
                            "shared indexer layer " + std::to_string(il + 1) + " reuses, and a loop's extra "
                            "evaluations would overwrite it; choose a window without a full indexer layer "
                            "immediately followed by a shared one";
    // the nearest window of the same width that can loop, else of the widest width that has one
    const int32_t n = n_layer_of(model);
    for (int32_t w = end - start + 1; w >= 1; --w) {
        for (int32_t d = 0; d < n; ++d) {
            for (int32_t s : { start - d, start + d }) {
                if (s >= 0 && s + w <= n && first_carried_state_layer(model, s, s + w - 1) < 0) {
                    return why + ", e.g. " + std::to_string(s) + ":" + std::to_string(s + w - 1);
                }
            }
        }
    }
    return why;
}

int32_t llama_loop_validate(const llama_model * model, const llama_loop_params * params) {
    if (!model || !params) {
        return fail(LLAMA_LOOP_ERR_INVALID, "model and params must not be NULL");
    }
    if (check_values(*params) != LLAMA_LOOP_OK) {
        return LLAMA_LOOP_ERR_INVALID;
    }
    if (params->n_steps == 1) {
        return ok(); // off is valid for every model
    }
    // an encoder may share a loop-capable builder (llama-embed runs llama's), but the contract's
    // evaluations attend causally
    const bool encoder = llama_model_has_encoder(model) || !model->hparams.causal_attn;
    if (encoder || !llama_loop_arch_supported(model)) {
        return fail(LLAMA_LOOP_ERR_UNSUPPORTED, std::string("architecture '") + llm_arch_name(model->arch) +
                    "' cannot loop: " + unsupported_reason(*model));
    }
    const int32_t n = n_layer_of(*model);
    if (params->start >= 0 && params->end >= n) {
        return fail(LLAMA_LOOP_ERR_INVALID, "window " + std::to_string(params->start) + ":" + std::to_string(params->end) +
                    " is outside the model: layers are 0.." + std::to_string(n - 1));
    }
    llama_loop_params p = *params;
    resolve(*model, p);
    const std::string conflict = carried_state_conflict(*model, p.start, p.end);
    if (!conflict.empty()) {
        return fail(LLAMA_LOOP_ERR_UNSUPPORTED, "window " + std::to_string(p.start) + ":" + std::to_string(p.end) +
                    " cannot loop in " + llm_arch_name(model->arch) + ": " + conflict);
    }
    return ok();
}

int32_t llama_loop_set(llama_context * ctx, const llama_loop_params * params) {
    return set_loop(ctx, params, /*reserve =*/ true);
}

// ctx is a context and seq one of its sequence ids.
static int32_t check_seq(const llama_context * ctx, llama_seq_id seq) {
    if (!ctx) {
        return fail(LLAMA_LOOP_ERR_INVALID, "ctx must not be NULL");
    }
    if (seq < 0 || seq >= (llama_seq_id) ctx->get_cparams().n_seq_max) {
        return fail(LLAMA_LOOP_ERR_INVALID, "seq " + std::to_string(seq) + " is outside [0, n_seq_max = " +
                    std::to_string(ctx->get_cparams().n_seq_max) + ")");
    }
    return LLAMA_LOOP_OK;
}

int32_t llama_loop_seq_set(llama_context * ctx, llama_seq_id seq, bool loop, llama_loop_decode decode, int32_t decode_n) {
    if (int32_t rc = check_seq(ctx, seq); rc != LLAMA_LOOP_OK) {
        return rc;
    }
    if (decode < LLAMA_LOOP_DECODE_BYPASS || decode > LLAMA_LOOP_DECODE_FIRST_N || decode_n < 0) {
        return fail(LLAMA_LOOP_ERR_INVALID, "decode mode out of range");
    }
    if (loop && !ctx->get_cparams().loop.active()) {
        return fail(LLAMA_LOOP_ERR_UNSUPPORTED, "the context does not loop; set its loop first");
    }
    llama_loop_sequences & seqs = ctx->loop_seqs;
    seqs.off[seq]      = !loop;
    seqs.decode[seq]   = (uint8_t) (1 + decode);
    seqs.decode_n[seq] = decode_n;
    return ok();
}

int32_t llama_loop_seq_set_spec(llama_context * ctx, llama_seq_id seq, const char * spec) {
    if (!ctx) {
        return fail(LLAMA_LOOP_ERR_INVALID, "ctx must not be NULL");
    }
    const std::string s = spec ? spec : "";
    if (s.empty() || s == "on") {
        return seq < 0 ? fail(LLAMA_LOOP_ERR_INVALID, "seq must not be negative") : llama_loop_seq_reset(ctx, seq);
    }
    const llama_model & model = ctx->get_model();
    llama_loop_params p;
    if (int32_t rc = llama_loop_parse(&model, s.c_str(), &p); rc != LLAMA_LOOP_OK) {
        return rc;
    }
    if (p.n_steps <= 1) {
        return llama_loop_seq_set(ctx, seq, false, LLAMA_LOOP_DECODE_BYPASS, 0);
    }
    const llama_loop_params & cur = ctx->get_cparams().loop.params;
    if (ctx->get_cparams().loop.active()) {
        if (int32_t rc = llama_loop_validate(&model, &p); rc != LLAMA_LOOP_OK) {
            return rc;
        }
        resolve(model, p);
    }
    if (!ctx->get_cparams().loop.active() || !same_recipe(p, cur)) {
        char want[128], have[128];
        llama_loop_format(&p, want, sizeof(want));
        llama_loop_format(&cur, have, sizeof(have));
        return fail(LLAMA_LOOP_ERR_INVALID, std::string("a request can turn the loop off or change its decode mode, not "
                    "the recipe: this context loops \"") + have + "\", the request asks for \"" + want + "\"");
    }
    return llama_loop_seq_set(ctx, seq, true, p.decode, p.decode_n);
}

int32_t llama_loop_seq_reset(llama_context * ctx, llama_seq_id seq) {
    if (!ctx) {
        return fail(LLAMA_LOOP_ERR_INVALID, "ctx must not be NULL");
    }
    if (seq >= LLAMA_LOOP_MAX_SEQ) {
        return fail(LLAMA_LOOP_ERR_INVALID, "seq " + std::to_string(seq) + " is out of range");
    }
    ctx->loop_seqs.reset_choices(seq);
    return ok();
}

int32_t llama_loop_seq_verify(llama_context * ctx, llama_seq_id seq, bool verify) {
    if (int32_t rc = check_seq(ctx, seq); rc != LLAMA_LOOP_OK) {
        return rc;
    }
    ctx->loop_seqs.verify[seq] = verify;
    return ok();
}

int32_t llama_loop_get(const llama_context * ctx, llama_loop_params * params) {
    if (!ctx) {
        return fail(LLAMA_LOOP_ERR_INVALID, "ctx must not be NULL");
    }
    const llama_loop_recipe & recipe = ctx->get_cparams().loop;
    if (params) {
        *params = recipe.params;
    }
    return recipe.active() ? 1 : 0;
}

void llama_loop_clear(llama_context * ctx) {
    if (!ctx) {
        return;
    }
    llama_loop_params off = llama_loop_off_params();
    llama_loop_set(ctx, &off);
}

const char * llama_loop_last_error(void) { return g_last_error.c_str(); }

int32_t llama_loop_sampler_sample(llama_sampler * smpl, llama_context * ctx, int32_t idx, llama_token * token) {
    if (!smpl || !ctx || !token) {
        return fail(LLAMA_LOOP_ERR_INVALID, "smpl, ctx and token must not be NULL");
    }
    try {
        llama_assert_scope assert_scope; // the grammar's GGML_ABORT becomes an exception here
        *token = llama_sampler_sample(smpl, ctx, idx);
    } catch (const std::exception & e) {
        return fail(LLAMA_LOOP_ERR_INVALID, std::string("sampling failed: ") + e.what());
    }
    return ok();
}

int32_t llama_loop_rpc_add_server(const char * endpoint, void ** devices, size_t n_max) {
    if (!endpoint || !*endpoint) {
        return fail(LLAMA_LOOP_ERR_INVALID, "endpoint must be \"host:port\"");
    }
    ggml_backend_reg_t rpc = ggml_backend_reg_by_name("RPC");
    if (!rpc) {
        return fail(LLAMA_LOOP_ERR_UNSUPPORTED, "this build has no RPC backend (build with -DGGML_RPC=ON)");
    }
    using add_server_fn = ggml_backend_reg_t (*)(const char *);
    auto add_server = (add_server_fn) ggml_backend_reg_get_proc_address(rpc, "ggml_backend_rpc_add_server");
    if (!add_server) {
        return fail(LLAMA_LOOP_ERR_UNSUPPORTED, "the RPC backend has no ggml_backend_rpc_add_server");
    }
    static std::mutex mutex;
    static std::unordered_map<std::string, ggml_backend_reg_t> registered; // ggml_backend_register once each
    std::lock_guard<std::mutex> lock(mutex);
    ggml_backend_reg_t reg = nullptr;
    auto it = registered.find(endpoint);
    if (it != registered.end()) {
        reg = it->second;
    } else {
        try {
            llama_assert_scope assert_scope; // ggml aborts when it cannot connect
            reg = add_server(endpoint);
        } catch (const std::exception & e) {
            return fail(LLAMA_LOOP_ERR_INVALID, std::string("RPC server ") + endpoint + ": " + e.what());
        }
        if (!reg) {
            return fail(LLAMA_LOOP_ERR_INVALID, std::string("RPC server ") + endpoint + " reports no devices");
        }
        ggml_backend_register(reg);
        registered[endpoint] = reg;
    }
    const size_t n = ggml_backend_reg_dev_count(reg);
    for (size_t i = 0; devices && i < n && i < n_max; ++i) {
        devices[i] = ggml_backend_reg_dev_get(reg, i);
    }
    ok();
    return (int32_t) n;
}

int32_t llama_loop_get_memory(const llama_context * ctx, llama_loop_memory * out) {
    if (!ctx || !out) {
        return fail(LLAMA_LOOP_ERR_INVALID, "ctx and out must not be NULL");
    }
    *out = {};
    for (const auto & [buft, m] : llama_get_memory_breakdown(ctx)) {
        out->model   += m.model;
        out->context += m.context;
        out->compute += m.compute;
    }
    out->graph_max_nodes = ctx->graph_max_nodes(ctx->n_ubatch());
    // llm_graph_result's buffer, once for the graph in use and once for the reserve graph
    out->graph_meta = 2 * (ggml_tensor_overhead() * out->graph_max_nodes +
                           ggml_graph_overhead_custom(out->graph_max_nodes, false));
    return ok();
}

bool llama_loop_abort_on_flag(void * flag) {
    // a plain flag: no ordering is needed, only that each check reads memory again
    return flag && *static_cast<const volatile int32_t *>(flag) != 0;
}

const char * llama_loop_version(void) { return LOOPCPP_VERSION; }

const char * llama_loop_llama_commit(void) { return LOOPCPP_LLAMA_COMMIT; }

int32_t llama_loop_api_version(void) { return LLAMA_LOOP_API_VERSION; }

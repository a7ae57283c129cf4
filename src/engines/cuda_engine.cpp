// The CUDA engine: the fp16 executors of models/cuda/ with the UNet step replayed as a CUDA graph, and the
// denoising loop kept on the device (guidance and the scheduler's step plan run there too; each step reads
// back one count). Without the CUDA backend, create_cuda_engine throws kUnsupported.
#include "engines/diagnostics.h"
#include "engines/engine.h"
#include "sdrt/error.h"

#if SDRT_HAVE_CUDA

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>
#include <vector>

#include <nvtx3/nvToolsExt.h>

#include "backends/cuda/check.h"
#include "backends/cuda/elementwise.cuh"
#include "backends/cuda/scheduler_step.cuh"
#include "models/cpu/clip_text.h"
#include "models/cpu/vae.h"
#include "models/cuda/clip_text.h"
#include "models/cuda/unet.h"
#include "models/cuda/vae.h"

namespace sdrt::engines {
namespace {

using models::cuda::Act;
using models::cuda::ActivationPool;
using models::cuda::check;
using models::cuda::Context;
using models::cuda::DeviceBuffer;

// The UNet and VAE decoder of a description, streamed to the device (each WeightStore is open only while its
// network loads).
models::cuda::UNet load_unet(Context& ctx, const ModelDescription& d) {
  if (!d.unet) throw Error(ErrorKind::kInternal, "CudaEngine: the model description has no UNet");
  const auto weights = d.unet_source->open_weights();
  return models::cuda::UNet::load(ctx, *d.unet, {weights, d.unet_source->config_label});
}

models::cuda::VaeDecoder load_vae(Context& ctx, const ModelDescription& d) {
  const auto weights = d.vae_source->open_weights();
  return models::cuda::VaeDecoder::load(ctx, *d.vae, {weights, d.vae_source->config_label});
}

class CudaEngine final : public Engine, public Diagnostics {
 public:
  explicit CudaEngine(const ModelDescription& d)
      : description_(d),
        context_s_(lap()),
        unet_(load_unet(ctx_, d)),
        unet_s_(uploaded_lap()),
        vae_(load_vae(ctx_, d)),
        vae_s_(uploaded_lap()) {
    // The GPU runs the text encoders' layers; the host keeps the embedding tables (a lookup per prompt) and
    // the pooled projection (one row).
    for (const auto& te : d.text_encoders) {
      const auto weights = te.source.open_weights();
      const models::WeightSource w{weights, te.source.config_label, models::clip_text_key_prefix(weights)};
      text_.push_back(models::cuda::ClipTextModel::load(ctx_, te.model, w));
      embeddings_.push_back(models::cpu::ClipTextModel::load(te.model, w, /*embeddings_only=*/true));
    }
    ctx_.finish_uploads();  // the pinned staging ring is only needed while loading
    text_s_ = lap();
  }

  Diagnostics* diagnostics() override { return this; }

  std::map<std::string, double> load_breakdown() const override {
    return {{"context", context_s_}, {"unet", unet_s_}, {"vae", vae_s_}, {"text_encoder", text_s_}};
  }

  Tensor encode_text(std::span<const int32_t> ids) override {
    return encode_embeddings(embeddings_.at(0).embed(ids));
  }

  TextEncoding encode_text_full(std::span<const int32_t> ids, const TextRequest& request) override {
    if (request.all_hidden_states)
      throw Error(ErrorKind::kUnsupported,
                  "the CUDA engine keeps only the text encoder's last two hidden states: every hidden state "
                  "needs the CPU engine");
    if (request.encoder >= text_.size())
      throw Error(ErrorKind::kInternal, fmt::format("CudaEngine: no text encoder {}", request.encoder));
    const auto& host = embeddings_[request.encoder];
    TextEncoding e;
    e.last_hidden_state = run_text_encoder(request.encoder, host.embed(ids), &e.penultimate_hidden_state);
    e.pooler_output = host.pool(e.last_hidden_state, ids);
    if (auto projected = host.project(e.pooler_output)) e.text_embeds = std::move(*projected);
    return e;
  }

  Tensor encode_embeddings(const Tensor& embeddings) override {
    return run_text_encoder(0, embeddings, nullptr);
  }

  // Input embeddings [B, S, D] -> last_hidden_state [B, S, D] float32 (and hidden_states[-2] when asked).
  Tensor run_text_encoder(size_t encoder, const Tensor& embeddings, Tensor* penultimate) {
    const int64_t B = embeddings.dim(0), S = embeddings.dim(1), D = embeddings.dim(2);
    stage_f32(embeddings);
    Act x(pool_, B, S, 1, D);
    cuda::launch_f32_to_f16(staging_.as<float>(), x.data(), x.numel(), ctx_.stream());
    Act before_last;
    const Act y = text_.at(encoder).forward(ctx_, pool_, x, penultimate ? &before_last : nullptr);
    if (penultimate) *penultimate = download_f32(before_last, {B, S, D});
    return download_f32(y, {B, S, D});
  }

  Tensor download_f32(const Act& a, const Shape& shape) {
    DeviceBuffer& out = result_buffer(static_cast<size_t>(a.numel()) * sizeof(float));
    cuda::launch_f16_to_f32(a.data(), out.as<float>(), a.numel(), ctx_.stream());
    Tensor result(shape, DType::kF32);
    cuda::download(ctx_, result.raw_data(), out.data(), result.nbytes());
    return result;
  }

  std::string device_name() const override { return cuda::device_description(); }

  void set_context(const Tensor& context, const Tensor& add_embeds) override {
    const Tensor c = context.to(DType::kF32);
    const bool text_time = unet_.config().text_time_embedding;
    if (text_time != !add_embeds.empty() ||
        (text_time && (add_embeds.rank() != 2 || add_embeds.dim(0) != c.dim(0) ||
                       add_embeds.dim(1) != unet_.config().projection_class_embeddings_input_dim)))
      throw Error(ErrorKind::kInvalidArgument, fmt::format("CudaEngine: add_embeds {} do not fit the unet",
                                                           shape_to_string(add_embeds.shape())));
    add_embeds_host_ = add_embeds.empty() ? Tensor() : add_embeds.to(DType::kF32);
    const int64_t B = c.dim(0), S = c.dim(1), D = c.dim(2);
    if (D != unet_.config().cross_attention_dim)
      throw Error(ErrorKind::kInvalidArgument, fmt::format("context width {} does not match the unet's {}", D,
                                                           unet_.config().cross_attention_dim));
    const bool same_shape = context_shape_ == std::vector<int64_t>{B, S, D};
    context_shape_ = {B, S, D};
    context_host_ = c;
    if (!same_shape) {
      graph_.reset();
    } else if (graph_) {  // same shapes: keep the captured step, refresh its context
      stage_f32(context_host_);
      cuda::launch_f32_to_f16(staging_.as<float>(), graph_->context().data(), c.numel(), ctx_.stream());
      upload_add_embeds();
      graph_->context_changed();
    }
  }

  // SDXL's add_embeds into the graph's input, in fp16.
  void upload_add_embeds() {
    if (add_embeds_host_.empty()) return;
    stage_f32(add_embeds_host_);
    cuda::launch_f32_to_f16(staging_.as<float>(), graph_->add_embeds().data(), add_embeds_host_.numel(),
                            ctx_.stream());
  }

  void begin_sampling(const Tensor& latents, const schedulers::Scheduler& scheduler) override {
    if (latents.rank() != 4 || latents.dim(0) != 1)
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("CudaEngine: latents of shape {} are not [1, C, h, w]",
                              shape_to_string(latents.shape())));
    const int buffer_count = step_buffer::kFirstState + scheduler.state_buffer_count();
    if (buffer_count > kMaxStepBuffers)
      throw Error(ErrorKind::kInternal, fmt::format("CudaEngine: {} scheduler buffers", buffer_count));
    const Tensor x = latents.to(DType::kF32);
    ctx_.synchronize();  // the previous loop's buffers may still be in use
    sampling_buffers_.clear();
    sampling_buffers_.reserve(static_cast<size_t>(buffer_count));
    for (int b = 0; b < buffer_count; ++b) {
      sampling_buffers_.emplace_back(x.nbytes());
      // Plans write state before reading it; zeros keep anything else deterministic.
      check(cudaMemsetAsync(sampling_buffers_.back().data(), 0, x.nbytes(), ctx_.stream()), "memset");
    }
    if (nonfinite_count_.size() < sizeof(int)) nonfinite_count_ = DeviceBuffer(sizeof(int));
    sampling_shape_ = x.shape();
    cuda::upload(ctx_, sampling_buffer(step_buffer::kSample), x.raw_data(), x.nbytes());
  }

  int64_t sampling_step(schedulers::Scheduler& scheduler, size_t step_index, float cfg_scale,
                        schedulers::TorchGenerator& rng) override {
    namespace buffer = step_buffer;
    if (sampling_buffers_.empty()) throw Error(ErrorKind::kInternal, "CudaEngine: begin_sampling first");
    if (context_shape_.empty()) throw Error(ErrorKind::kInternal, "CudaEngine: set_context first");
    const int64_t C = sampling_shape_[1], h = sampling_shape_[2], w = sampling_shape_[3], HW = h * w;
    if (unet_.config().out_channels != C)
      throw Error(ErrorKind::kInvalidArgument,
                  "CudaEngine: the unet's output channels differ from its input's");
    const int64_t B = context_shape_[0];
    auto& graph = graph_for(B, h, w);
    // scale_model_input rides on the fp16 conversion of the UNet input; both halves of the batch see it.
    const float input_scale = 1.0f / scheduler.model_input_divisor(step_index);
    for (int64_t b = 0; b < B; ++b)
      cuda::launch_nchw_f32_to_nhwc_f16(sampling_buffer(buffer::kSample), graph.sample().data() + b * HW * C,
                                        1, C, HW, input_scale, ctx_.stream());
    set_timestep(graph, scheduler.timesteps().at(step_index));
    graph.run(ctx_);
    float* model_output = sampling_buffer(buffer::kModelOutput);
    if (B == 2)
      cuda::launch_guidance_combine(graph.output().data(), model_output, 1, C, HW, cfg_scale, ctx_.stream());
    else
      cuda::launch_nhwc_f16_to_nchw_f32(graph.output().data(), model_output, 1, C, HW, ctx_.stream());

    // Planned (and the noise drawn) while the UNet runs.
    const StepPlan plan = scheduler.plan_step(step_index);
    if (plan.needs_noise) {
      const Tensor noise = rng.randn(sampling_shape_);
      cuda::upload(ctx_, sampling_buffer(buffer::kNoise), noise.raw_data(), noise.nbytes());
    }
    std::vector<float*> buffers;
    for (const DeviceBuffer& b : sampling_buffers_) buffers.push_back(b.as<float>());
    cuda::launch_step_plan(plan, buffers.data(), static_cast<int>(buffers.size()), C * HW, ctx_.stream());
    std::swap(sampling_buffers_[buffer::kSample], sampling_buffers_[buffer::kPrevSample]);

    int* count = nonfinite_count_.as<int>();
    check(cudaMemsetAsync(count, 0, sizeof(int), ctx_.stream()), "memset");
    cuda::launch_count_nonfinite_f32(sampling_buffer(buffer::kSample), C * HW, count, ctx_.stream());
    int nonfinite = 0;
    cuda::download(ctx_, &nonfinite, count, sizeof(int));
    return nonfinite;
  }

  Tensor sampling_latents() override {
    if (sampling_buffers_.empty()) throw Error(ErrorKind::kInternal, "CudaEngine: begin_sampling first");
    Tensor result(sampling_shape_, DType::kF32);
    cuda::download(ctx_, result.raw_data(), sampling_buffer(step_buffer::kSample), result.nbytes());
    return result;
  }

  Tensor unet_forward(const Tensor& sample, double timestep, const Tensor& context,
                      const Tensor& add_embeds) override {
    set_context(context, add_embeds);
    const int64_t B = sample.dim(0), C = sample.dim(1), h = sample.dim(2), w = sample.dim(3), HW = h * w;
    if (B != context_shape_[0]) throw Error(ErrorKind::kInvalidArgument, "unet_forward: batch mismatch");
    auto& graph = graph_for(B, h, w, /*use_graph=*/false);
    stage_f32(sample);
    cuda::launch_nchw_f32_to_nhwc_f16(staging_.as<float>(), graph.sample().data(), B, C, HW, 1.0f,
                                      ctx_.stream());
    set_timestep(graph, timestep);
    graph.run(ctx_);
    const int64_t out_c = unet_.config().out_channels;
    DeviceBuffer& out = result_buffer(static_cast<size_t>(B * out_c * HW) * sizeof(float));
    cuda::launch_nhwc_f16_to_nchw_f32(graph.output().data(), out.as<float>(), B, out_c, HW, ctx_.stream());
    Tensor result({B, out_c, h, w}, DType::kF32);
    cuda::download(ctx_, result.raw_data(), out.data(), result.nbytes());
    graph_.reset();
    return result;
  }

  Tensor decode(const Tensor& z) override {
    Tensor image = decode_f16(z);
    const float* d = image.data<float>();
    for (int64_t i = 0; i < image.numel(); ++i)
      if (!std::isfinite(d[i])) {
        // fp16 overflow inside the VAE (it happens with some VAEs): decode again in fp32 on the CPU, from the
        // same description and weights.
        const auto weights = description_.vae_source->open_weights();
        const auto cpu_vae = models::cpu::AutoencoderKL::load(
            *description_.vae, {weights, description_.vae_source->config_label});
        return cpu_vae.decode(z);
      }
    return image;
  }

  // The fp16 decoder: z [1, L, h, w] fp32 -> image [1, 3, H, W] fp32.
  Tensor decode_f16(const Tensor& z) {
    const int64_t L = z.dim(1), h = z.dim(2), w = z.dim(3);
    stage_f32(z);
    Act latent(pool_, 1, h, w, L);
    cuda::launch_nchw_f32_to_nhwc_f16(staging_.as<float>(), latent.data(), 1, L, h * w, 1.0f, ctx_.stream());
    const Act image = vae_.decode(ctx_, pool_, latent);  // [1, H, W, 3]
    DeviceBuffer& out = result_buffer(static_cast<size_t>(image.numel()) * sizeof(float));
    cuda::launch_nhwc_f16_to_nchw_f32(image.data(), out.as<float>(), 1, image.c, image.h * image.w,
                                      ctx_.stream());
    Tensor result({1, image.c, image.h, image.w}, DType::kF32);
    cuda::download(ctx_, result.raw_data(), out.data(), result.nbytes());
    return result;
  }

  double time_unet_step_ms(int64_t batch, int64_t height, int64_t width, int iterations) override {
    auto& graph = graph_for(batch, height, width);
    set_timestep(graph, 500.0);
    for (int i = 0; i < 5; ++i) graph.run(ctx_);  // plan, capture, warm up
    const double ms = median_ms(iterations, [&] { graph.run(ctx_); });
    // One more replay inside an NVTX range, for kernel profilers (ncu --nvtx --nvtx-include
    // "sdrt_unet_step/").
    nvtxRangePushA("sdrt_unet_step");
    graph.run(ctx_);
    ctx_.synchronize();
    nvtxRangePop();
    return ms;
  }

  std::map<std::string, double> profile_unet_step(int64_t batch, int64_t height, int64_t width) override {
    auto& graph = graph_for(batch, height, width, /*use_graph=*/false);
    set_timestep(graph, 500.0);
    graph.run(ctx_);
    const double total = median_ms(5, [&] { graph.run(ctx_); });
    std::map<std::string, double> totals;
    {
      models::cuda::OpProfiler profiler(ctx_);
      graph.run(ctx_);
      totals = profiler.totals();
    }
    totals["total"] = total;
    graph_.reset();
    return totals;
  }

  double time_vae_decode_ms(int64_t height, int64_t width, int iterations) override {
    const int64_t L = vae_.config().latent_channels;
    Act latent(pool_, 1, height, width, L);
    check(cudaMemsetAsync(latent.data(), 0, latent.numel() * sizeof(__half), ctx_.stream()), "memset");
    for (int i = 0; i < 2; ++i) vae_.decode(ctx_, pool_, latent);
    return median_ms(iterations, [&] { vae_.decode(ctx_, pool_, latent); });
  }

  double free_memory_bytes() const override {
    size_t free_bytes = 0, total = 0;
    check(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo");
    return static_cast<double>(free_bytes);
  }

  double device_memory_gib() const override {
    size_t free_bytes = 0, total = 0;
    check(cudaMemGetInfo(&free_bytes, &total), "cudaMemGetInfo");
    return static_cast<double>(total - free_bytes) / (1024.0 * 1024.0 * 1024.0);
  }

 private:
  models::cuda::UNetGraph& graph_for(int64_t B, int64_t h, int64_t w, bool use_graph = true) {
    if (context_shape_.empty()) throw Error(ErrorKind::kInternal, "CudaEngine: set_context first");
    if (!graph_ || graph_key_ != std::vector<int64_t>{B, h, w, use_graph}) {
      graph_.reset();
      graph_.emplace(unet_, B, h, w, context_shape_[1], use_graph);
      graph_key_ = {B, h, w, use_graph};
      // The context in fp16, once per graph.
      stage_f32(context_host_);
      const int64_t n = context_host_.numel();
      if (B != context_shape_[0]) throw Error(ErrorKind::kInternal, "CudaEngine: context batch mismatch");
      cuda::launch_f32_to_f16(staging_.as<float>(), graph_->context().data(), n, ctx_.stream());
      upload_add_embeds();
      graph_->context_changed();
    }
    return *graph_;
  }

  void set_timestep(models::cuda::UNetGraph& graph, double timestep) {
    const float t = static_cast<float>(timestep);
    // Pageable source: the copy is staged before the call returns, so `t` may go out of scope.
    check(cudaMemcpyAsync(graph.timestep(), &t, sizeof(float), cudaMemcpyHostToDevice, ctx_.stream()),
          "timestep");
  }

  // Copies a host fp32 tensor into the staging buffer (grown as needed).
  void stage_f32(const Tensor& t) {
    const Tensor f = t.to(DType::kF32);
    if (staging_.size() < f.nbytes()) {
      ctx_.synchronize();
      staging_ = DeviceBuffer(f.nbytes());
    }
    check(cudaMemcpyAsync(staging_.data(), f.raw_data(), f.nbytes(), cudaMemcpyHostToDevice, ctx_.stream()),
          "upload");
    ctx_.synchronize();  // `f` is a temporary
  }

  float* sampling_buffer(int id) { return sampling_buffers_.at(static_cast<size_t>(id)).as<float>(); }

  DeviceBuffer& result_buffer(size_t bytes) {
    if (result_.size() < bytes) {
      ctx_.synchronize();
      result_ = DeviceBuffer(bytes);
    }
    return result_;
  }

  template <typename F>
  double median_ms(int iterations, F&& body) {
    cudaEvent_t start, stop;
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
    std::vector<float> times;
    for (int i = 0; i < iterations; ++i) {
      check(cudaEventRecord(start, ctx_.stream()), "cudaEventRecord");
      body();
      check(cudaEventRecord(stop, ctx_.stream()), "cudaEventRecord");
      check(cudaEventSynchronize(stop), "cudaEventSynchronize");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
      times.push_back(ms);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    std::sort(times.begin(), times.end());
    return times.empty() ? 0.0 : times[times.size() / 2];
  }

  // Seconds since the previous lap once the weight uploads issued so far have landed.
  double uploaded_lap() {
    ctx_.synchronize();
    return lap();
  }
  // Seconds since the previous lap (load-time breakdown; members initialise in declaration order).
  double lap() {
    const auto now = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(now - lap_).count();
    lap_ = now;
    return s;
  }
  ModelDescription description_;
  std::chrono::steady_clock::time_point lap_ = std::chrono::steady_clock::now();
  Context ctx_;
  double context_s_ = 0;
  ActivationPool pool_;
  models::cuda::UNet unet_;
  double unet_s_ = 0;
  models::cuda::VaeDecoder vae_;
  double vae_s_ = 0, text_s_ = 0;
  std::vector<models::cuda::ClipTextModel> text_;
  std::vector<models::cpu::ClipTextModel> embeddings_;  // embedding tables and projections, on the host
  std::vector<int64_t> context_shape_;
  Tensor context_host_, add_embeds_host_;
  std::optional<models::cuda::UNetGraph> graph_;
  std::vector<int64_t> graph_key_;
  DeviceBuffer staging_, result_;
  // The device-resident denoising loop: the plan's buffers indexed by step_buffer id.
  std::vector<DeviceBuffer> sampling_buffers_;
  Shape sampling_shape_;
  DeviceBuffer nonfinite_count_;
};

}  // namespace

std::unique_ptr<Engine> create_cuda_engine(const ModelDescription& model) {
  return std::make_unique<CudaEngine>(model);
}

}  // namespace sdrt::engines

#else

namespace sdrt::engines {
std::unique_ptr<Engine> create_cuda_engine(const ModelDescription&) {
  throw Error(ErrorKind::kUnsupported,
              "CUDA device unsupported: this sdrt was built without the CUDA backend");
}
}  // namespace sdrt::engines

#endif

"""loopwright.kernels: Triton kernels, each beside its plain-PyTorch reference (imports only torch and triton).

- ``kernels.mta``: causal Multi-Token Attention with the pre-softmax key-query convolution and pre-softmax head
  mixing fused into flash-style attention (O(L) memory, forward + backward): ``mta_attention``,
  ``mta_attention_reference``, ``mta_attention_blockwise``.
- ``kernels.cope``: one-pass causal CoPE attention (key blocks backwards from the diagonal with a running gate
  sum): ``cope_attention``, ``cope_attention_reference``, ``cope_attention_blockwise``.
- ``kernels.moe``: top-k SwiGLU mixture-of-experts FFN (token permutation + grouped GEMM) for the BTX layer:
  ``moe_ffn``, ``moe_ffn_reference``.

Kernels run on CUDA tensors, and on CPU tensors only when ``TRITON_INTERPRET=1`` was set before ``triton`` was
first imported (tests; correctness only). Nothing is imported here, so ``import loopwright.kernels`` stays cheap
and does not import triton. Algorithms and measurements: docs/kernels.md; benchmark: tests/bench/kernels.py.
"""

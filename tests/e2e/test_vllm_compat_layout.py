"""What sllm_ray takes from vLLM, checked against the installed vLLM (imports it)."""

from __future__ import annotations

from sllm_ray.store.locate import LAYOUT_ARGS


def test_layout_args_are_the_weight_shaping_arguments_vllm_derives() -> None:
    from sllm_ray.engine import vllm_compat as vc

    derived = vc.weight_shaping_engine_args()
    # Written out in store/locate.py for processes without vLLM: the same list.
    assert derived == LAYOUT_ARGS
    # The arguments that everyone agrees shape weights are among them, the cache and
    # scheduling ones are not.
    assert {"dtype", "quantization", "tensor_parallel_size", "pipeline_parallel_size"} <= set(derived)
    assert not {"max_model_len", "kv_cache_memory_bytes", "enforce_eager", "max_num_seqs"} & set(derived)

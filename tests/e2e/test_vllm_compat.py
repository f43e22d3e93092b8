"""What sllm_ray takes from vLLM, checked against the installed vLLM (imports it)."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_engine_arguments_are_checked_by_vllms_own_parser() -> None:
    from sllm_ray.engine import vllm_compat as vc

    assert vc.engine_args_problem({"max_model_len": 512, "enforce_eager": True, "dtype": None}) is None
    assert vc.engine_args_problem({"enforce_eager": False, "model_loader_extra_config": {"a": 1}}) is None
    refused = {
        "dtype": ("float99", "invalid choice: 'float99'"),
        "tensor_parallel_size": (1.5, "invalid int value: '1.5'"),
        "gpu_memory_utilization": ("high", "invalid float value: 'high'"),
        "compilation_config": ({"no_such_field": 1}, "CompilationConfig"),
    }
    for key, (value, fragment) in refused.items():
        problem = vc.engine_args_problem({key: value})
        assert problem is not None and fragment in problem, (key, problem)


def test_an_architecture_new_to_the_machine_is_inspected_in_process(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM's own inspection of a model class it has no cached info for runs a subprocess
    that imports vLLM again (about 20 s); after ``cache_model_info`` it needs none."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.model_executor.models import registry

    from sllm_ray.engine import vllm_compat as vc

    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path))
    registry._try_inspect_model_cls.cache_clear()

    def no_subprocess(_: object) -> None:
        raise AssertionError("vLLM inspected the model class in a subprocess")

    monkeypatch.setattr(registry, "_run_in_subprocess", no_subprocess)
    vc.cache_model_info(str(tiny_model_dir))
    assert [p.name for p in (tmp_path / "modelinfos").iterdir()] == [
        "vllm-model_executor-models-llama-LlamaForCausalLM.json"
    ]
    args = EngineArgs(model=str(tiny_model_dir), max_model_len=256, kv_cache_memory_bytes=2**24)
    assert args.create_engine_config().model_config.architectures == ["LlamaForCausalLM"]


def test_the_cpu_kv_cache_buffer_is_mapped_zeroed_not_written() -> None:
    import torch

    from sllm_ray.engine import vllm_compat

    lazy = vllm_compat.LazyZeros(torch)
    size = 64 * 1024**2
    buffer = lazy.zeros(size, dtype=torch.int8, device=torch.device("cpu"))
    assert buffer.shape == (size,) and buffer.dtype == torch.int8
    assert int(buffer[::4096].abs().sum()) == 0  # zero as torch.zeros', only mapped
    assert isinstance(buffer.untyped_storage().nbytes(), int)
    buffer[7] = 3  # writable, like any KV cache
    assert int(buffer[7]) == 3
    small = lazy.zeros(16, dtype=torch.int32)  # anything else: torch's own
    assert small.dtype == torch.int32 and int(small.sum()) == 0
    assert lazy.float32 is torch.float32
    vllm_compat.prepare_engine_process()
    from vllm.v1.worker import utils

    # vLLM still allocates its KV cache where the wrapper reaches it.
    assert isinstance(utils.torch, vllm_compat.LazyZeros)
    assert "torch.zeros(buf_size, dtype=torch.int8, device=device)" in Path(utils.__file__).read_text()

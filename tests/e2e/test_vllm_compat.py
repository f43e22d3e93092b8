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


def test_plugin_lists_are_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    import vllm.plugins
    from vllm.v1.engine import async_llm
    from vllm.v1.sample import logits_processor

    from sllm_ray.engine import vllm_compat

    monkeypatch.setattr(vllm.plugins, "plugins_loaded", False)  # as in a fresh launcher
    vllm_compat.prepare_engine_process()

    def no_scan(**_: object) -> None:
        raise AssertionError("an engine build read the installed packages' entry points")

    monkeypatch.setattr(importlib.metadata, "entry_points", no_scan)
    first = async_llm.load_stat_logger_plugin_factories()
    assert first == async_llm.load_stat_logger_plugin_factories() and first is not (
        async_llm.load_stat_logger_plugin_factories()
    )  # a copy each time: vLLM's callers may extend it
    assert isinstance(logits_processor._load_logitsprocs_plugins(), list)
    vllm.plugins.load_general_plugins()  # as each engine's arguments do: loaded already
    vllm_compat.prepare_engine_process()  # again: still answered, not wrapped twice
    assert async_llm.load_stat_logger_plugin_factories() == first


def test_a_cpu_build_asks_lscpu_for_the_cpus_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import subprocess

    from vllm.utils import cpu_resource_utils

    from sllm_ray.engine import vllm_compat

    vllm_compat.prepare_engine_process()

    def no_lscpu(*_: object, **__: object) -> None:
        raise AssertionError("an engine build ran lscpu")

    monkeypatch.setattr(subprocess, "check_output", no_lscpu)
    allowed = cpu_resource_utils.get_allowed_cpu_list()  # as each CPU build does, twice
    assert {cpu.id for cpu in allowed} == os.sched_getaffinity(0)  # still this process's own


def test_seeding_formats_no_stack_for_devices_torch_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    import traceback

    import torch

    from sllm_ray.engine import vllm_compat

    vllm_compat.prepare_engine_process()

    def no_stack(*_: object) -> None:
        raise AssertionError("seeding formatted the caller's stack for a device lazy init")

    monkeypatch.setattr(traceback, "format_stack", no_stack)
    torch.manual_seed(7)  # as vLLM's set_random_seed does in each build
    first = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(first, torch.rand(3))  # the CPU generator is seeded all the same


AMX_CHECK = """
import ctypes
from sllm_ray.engine import vllm_compat

def tiles_allowed() -> bool:
    mask = ctypes.c_ulong(0)
    assert ctypes.CDLL(None).syscall(158, 0x1022, ctypes.byref(mask)) == 0  # ARCH_GET_XCOMP_PERM
    return bool(mask.value & (1 << 18))  # XFEATURE_XTILEDATA

before = tiles_allowed()
vllm_compat.prepare_engine_process()
print(before, tiles_allowed())
"""


def test_a_launcher_on_a_cpu_with_amx_may_use_its_tiles_and_so_may_its_hosts() -> None:
    """Without the permission, vLLM's bf16 CPU attention (AMX kernels) killed every forked
    host with SIGILL at its first request."""
    import subprocess
    import sys

    import torch

    if not torch.cpu._is_amx_tile_supported():
        pytest.skip("this CPU has no AMX")
    out = subprocess.run([sys.executable, "-c", AMX_CHECK], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["False", "True"]  # asked for by the preparation, not before


def test_chat_templates_are_resolved_by_the_first_chat_not_the_build() -> None:
    from vllm.renderers.online_renderer import OnlineRenderer

    from sllm_ray.engine import vllm_compat

    vllm_compat.prepare_engine_process()

    class NoRendering:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the build's warmup used the renderer ({name})")

    OnlineRenderer.warmup(NoRendering())  # type: ignore[arg-type]
    # init_app_state still calls it: the build needs nothing else from it.
    from vllm.entrypoints.launchers.api_server import app_state

    assert "online_renderer.warmup()" in Path(app_state.__file__).read_text()


# Qwen's guard: a system message after the first is an error, so vLLM merges them.
SYSTEM_FIRST = (
    "{% for m in messages %}{% if m['role'] == 'system' and not loop.first %}"
    "{{ raise_exception('System message must be at the beginning.') }}{% endif %}"
    "{{ m['content'] }}{% endfor %}"
)


@pytest.mark.parametrize(
    ("template", "merge"), [(SYSTEM_FIRST, True), ("{{ messages[0]['content'] }}", False)]
)
def test_the_inline_system_merge_is_vllms_decided_when_first_asked(template: str, merge: bool) -> None:
    from types import SimpleNamespace

    from vllm.entrypoints.anthropic.serving import AnthropicServingMessages

    from sllm_ray.engine import vllm_compat

    vllm_compat.prepare_engine_process()
    vllm_compat.prepare_engine_process()  # again: not deferred twice
    asked: list[str] = []

    class Renderer(SimpleNamespace):
        def __getattribute__(self, name: str) -> object:
            asked.append(name)
            return object.__getattribute__(self, name)

    verdict = AnthropicServingMessages._should_merge_inline_system(
        Renderer(renderer=None, chat_template=template)
    )
    assert asked == []  # nothing resolved or compiled while the serving layer is built
    assert bool(verdict) is merge and asked  # vLLM's own check, on first use
    assert bool(verdict) is merge and len(asked) == len(set(asked))  # once


def test_vllms_kernels_are_resolved_before_the_hosts_fork() -> None:
    import torch

    from sllm_ray.engine import vllm_compat

    vllm_compat.prepare_engine_process()
    ops = {name.partition("::")[::2] for name in torch._C._dispatch_get_all_op_names()}
    kernels = {(space, op.split(".")[0]) for space, op in ops if space in ("_C", "vllm")}
    assert ("_C", "rotary_embedding") in kernels  # one a host's first forward pass runs
    # ``torch.ops`` keeps an op's wrapper on its namespace once built: a host finds it.
    unresolved = [f"{space}.{op}" for space, op in kernels if op not in vars(getattr(torch.ops, space))]
    assert unresolved == []


def test_the_system_fingerprint_is_vllms_computed_once(tiny_model_dir: Path) -> None:
    import argparse

    from vllm.engine.arg_utils import EngineArgs
    from vllm.entrypoints.serve.utils.fingerprint import build_system_fingerprint

    from sllm_ray.engine import vllm_compat as vc
    from sllm_ray.engine.openai_engine import build_vllm_args

    config = EngineArgs(
        model=str(tiny_model_dir), max_model_len=256, kv_cache_memory_bytes=2**24
    ).create_engine_config()
    _, args = build_vllm_args("m", str(tiny_model_dir), {"max_model_len": 256})
    assert args.fingerprint_mode == "full"  # vLLM's default, which the serving layer reads
    fixed = vc.with_fingerprint(args, config)
    assert fixed.fingerprint_mode == "custom"
    assert fixed.fingerprint_value == build_system_fingerprint(config, "full")
    assert args.fingerprint_mode == "full"  # the engine's own namespace is left as it was
    hashed = vc.with_fingerprint(argparse.Namespace(**(vars(args) | {"fingerprint_mode": "hash"})), config)
    assert hashed.fingerprint_value == build_system_fingerprint(config, "hash")
    none = argparse.Namespace(**(vars(args) | {"fingerprint_mode": "none"}))
    assert vc.with_fingerprint(none, config) is none

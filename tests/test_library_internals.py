"""The private parts of other libraries that gradflow reads or patches, each named with what leans on it.

Most of them degrade quietly when gone (a getattr with a default, a patch skipped), so an upgrade of Hydra,
joblib, Typer, filelock or torch that renames one would not fail where it is used: it would make sweeps
compose slowly, Ctrl-C leave runs `running`, or a usage error print Click's three lines. This test fails
instead, naming the attribute and the gradflow code to change (README: Extending, "Library internals")."""

from __future__ import annotations

import importlib
import inspect

import pytest

# (module, attribute path, what of gradflow uses it)
INTERNALS = [
    ("hydra._internal.config_loader_impl", "ConfigLoaderImpl._apply_overrides_to_config",
     "config.hydra_compose and sweep.JobConfigLoader: a composed structure copied, its plain values applied"),
    ("hydra._internal.config_loader_impl", "get_overrides_dirname", "sweep.JobConfigLoader: a job's folder name"),
    ("hydra._internal.utils", "create_config_search_path", "config.config_loader: the loader over gradflow's conf/"),
    ("hydra._internal.hydra", "ConfigLoaderImpl", "sweep._hydra_composes_less: the loader a sweep makes"),
    ("hydra._internal.core_plugins.basic_sweeper", "BasicSweeper", "sweep: the grid's points as Hydra lists them"),
    ("hydra.plugins.sweeper", "Sweeper.validate_batch_is_legal", "sweep._hydra_composes_less: warms the loader"),
    ("hydra._internal.hydra", "Hydra.get_mode", "sweep._hydra_composes_less: one compose fewer per sweep"),
    ("omegaconf", "DictConfig._get_node", "sweep._launcher_kinds: a launcher plugin's setting types"),
    ("joblib._parallel_backends", "LokyBackend.abort_everything",
     "workers.finish_interrupted_jobs: Ctrl-C reaches the runs in flight before joblib kills them"),
    ("joblib.externals.loky.reusable_executor", "_executor", "workers._pool: the pool to stop and clean"),
    ("joblib.externals.loky.process_executor", "ProcessPoolExecutor._pending_work_items",
     "workers._interrupt_and_wait: the jobs still queued, cancelled"),
    ("joblib.externals.loky.process_executor", "ProcessPoolExecutor._processes",
     "workers._interrupt_and_wait: the workers Ctrl-C is passed to"),
    ("joblib._memmapping_reducer", "TemporaryResourcesManager._clean_temporary_resources",
     "workers.drop_pool_folders: the memory-map folder, after Ctrl-C"),
    ("multiprocessing.util", "_run_finalizers", "cli.console: multiprocessing's exit clean-up, after Ctrl-C"),
    ("typer.rich_utils", "rich_format_error", "cli.app: a usage error as gradflow's one line"),
    ("filelock", "UnixFileLock._context", "store._locks_the_file: the locked file is still the one at its path"),
    ("torch.amp", "GradScaler._get_scale_async", "recorder: the loss scale a backward pass ran at"),
    ("torch.amp", "GradScaler._per_optimizer_states", "recorder: whether the loop unscaled the gradients"),
    ("torch._C", "_current_graph_task_id", "probes.core: which backward pass a hook runs in"),
    ("torch._C", "_will_engine_execute_node", "probes.core: whether a pass reaches a probe point"),
    ("torch._C", "_current_autograd_node", "probes.core: a pass inside another (reentrant checkpointing)"),
    ("torch.autograd", "Variable._execution_engine.queue_callback",
     "probes.core: the gradients copied at the end of the running backward pass"),
    ("torch._dynamo.eval_frame", "OptimizedModule._orig_mod", "recorder: the module torch.compile wrapped"),
    ("multiprocessing.forkserver", "_forkserver._forkserver_pid", "workers.stop_fork_server: the fork server's pid"),
    ("multiprocessing.process", "current_process()._config", "workers.exit_now: multiprocessing's temporary folder"),
]
# attributes an instance gets in its class's __init__ (class.attribute: looked for there, as `self.attribute =`
# or object.__setattr__(self, "attribute", ...)), and those read off an instance made here
_SET_IN_INIT = {"ProcessPoolExecutor._pending_work_items", "ProcessPoolExecutor._processes",
                "OptimizedModule._orig_mod"}


def _resolve(module: str, path: str):
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize(("module", "path", "used_by"), INTERNALS, ids=[f"{m}:{p}" for m, p, _ in INTERNALS])
def test_each_private_part_gradflow_leans_on_is_still_there(module, path, used_by):
    if path in _SET_IN_INIT:
        cls, attr = path.split(".")
        init = inspect.getsource(_resolve(module, f"{cls}.__init__"))
        assert f"self.{attr} =" in init or f'(self, "{attr}"' in init, f"{module}.{path} is gone; it was used by {used_by}"
    elif path == "current_process()._config":
        assert hasattr(_resolve(module, "current_process")(), "_config"), f"{module}.{path} is gone ({used_by})"
    elif path in ("UnixFileLock._context", "GradScaler._per_optimizer_states"):
        cls, attr = path.split(".")
        made = _resolve(module, cls)("unused.lock") if cls == "UnixFileLock" else _resolve(module, cls)("cpu")
        assert hasattr(made, attr), f"{module}.{path} is gone; it was used by {used_by}"
        if cls == "UnixFileLock":
            assert hasattr(made._context, "lock_file_fd"), f"{module}.{path}.lock_file_fd is gone ({used_by})"
    else:
        try:
            _resolve(module, path)
        except (ImportError, AttributeError) as e:
            pytest.fail(f"{module}.{path} is gone ({e}); it was used by {used_by}")


def test_the_list_names_every_private_module_gradflow_imports():
    # a new `hydra._internal` or `joblib._...` import, or a new torch._C._ function, without its line above fails here
    import pathlib
    import re

    source = "\n".join(p.read_text() for p in pathlib.Path(__file__).parents[1].joinpath("gradflow").rglob("*.py"))
    imported = set(re.findall(r"(?:from|import) ((?:hydra|joblib|omegaconf|typer|filelock)[\w.]*\._\w[\w.]*)", source))
    listed = {m for m, _, _ in INTERNALS}
    unlisted = {i for i in imported if not any(m == i or m.startswith(i + ".") for m in listed)}
    assert not unlisted, unlisted
    # torch's private functions called by name (torch._C._current_graph_task_id): each listed
    called = set(re.findall(r"torch\._C\.(_\w+)", source))
    assert called <= {p for m, p, _ in INTERNALS if m == "torch._C"}, called


# --where flag=1 kept a Recorder's runs with flag True beside those with flag 1 (True read as the number 1)
def test_where_reads_true_as_no_number():
    import pandas as pd

    from gradflow.summary import matches

    flags = pd.Series([True, 1, 1.0, False, 0], dtype=object)
    assert matches(flags, "1").tolist() == [False, True, True, False, False]
    assert matches(flags, "true").tolist() == [True, False, False, False, False]
    assert matches(flags, "0").tolist() == [False, False, False, False, True]

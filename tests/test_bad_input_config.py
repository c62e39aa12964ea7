"""Bad config values through the real CLI: exit 1, one line on stderr naming the key (or value) and what is
allowed, no traceback, nothing created under the results folder. Command-level inputs live elsewhere."""

from __future__ import annotations

import pytest

from gradflow.config import compose, train_size
from gradflow.errors import GradflowError
from gradflow.overrides import job_name

G = "data=gaussian"  # a dataset whose sizes are keys, for the size rules
RNN = ["model=rnn", "data=adding", "data.T=5"]
LONG = "x" * 100_000  # a 100 kB value must not be echoed whole


def case(overrides: str | list[str], needle: str, id: str):
    return pytest.param(overrides.split() if isinstance(overrides, str) else overrides, needle, id=id)


CASES = [
    # every float key rejects nan and inf (and 1e400, which parses as inf)
    # (a boolean made a folder named False in the working folder, and cached the data there)
    case("data=mnist1d data.cache=false", "data.cache=false is not allowed: data.cache is the folder the dataset is "
         "cached in", "cache-a-boolean"),
    case("optim.lr=nan", "optim.lr", "lr-nan"),
    case("optim.lr=inf", "optim.lr", "lr-inf"),
    case("optim.lr=1e400", "optim.lr=inf must be a finite number (a number past 1.8e308, as 1e400, reads as inf)",
         "lr-1e400"),
    case("optim.lr=-1", "optim.lr", "lr-negative"),
    case("optim.weight_decay=inf", "optim.weight_decay", "weight-decay-inf"),
    case("optim.weight_decay=-0.1", "optim.weight_decay", "weight-decay-negative"),
    case("optim.scalar_lr_factor=-0.1", "optim.scalar_lr_factor", "scalar-lr-factor-negative"),
    case("init.gain=nan", "init.gain", "gain-nan"),
    case("init=orthogonal init.gain=-1", "init.gain", "gain-negative"),
    case("init=meanfield init.sw2=nan", "init.sw2", "sw2-nan"),
    case("init=meanfield init.sw2=0", "init.sw2", "sw2-zero"),
    case("init=meanfield init.sb2=-0.1", "init.sb2", "sb2-negative"),
    case("init=meanfield init.sb2=inf", "init.sb2", "sb2-inf"),
    case("norm=layernorm norm.eps=0", "norm.eps", "eps-zero"),
    case("norm.eps=nan", "norm.eps", "eps-nan"),
    case("train.grad_clip=nan", "train.grad_clip", "grad-clip-nan"),
    case("train.grad_clip=-1", "train.grad_clip", "grad-clip-negative"),
    case("train.clip_value=inf", "train.clip_value", "clip-value-inf"),
    case("model=rnn data=adding model.gain=nan", "model.gain", "rnn-gain-nan"),
    case("model=lstm data=adding model.forget_bias=inf", "model.forget_bias", "forget-bias-inf"),
    # a layer wider than any device holds (a typo's extra zeros), in every family
    case("model=lstm data=adding model.hidden=1000000", "model.hidden=1000000 must be <= 100000", "lstm-too-wide"),
    case("model=cnn model.channels=1000000", "model.channels=1000000 must be <= 100000", "cnn-too-wide"),
    case("model=transformer data=chars model.d_model=40000",
         "model.mlp_ratio=4 with model.d_model=40000 makes each MLP 160000 wide; at most 100000", "transformer-too-wide"),
    case("model=resnet model.widths=[16,32,1000000]",
         "model.widths=[16, 32, 1000000] must list three stages' filters, each 1 to 100000", "resnet-too-wide"),
    case("model=transformer data=chars model.depth=1000000", "model.depth=1000000 must be <= 100000",
         "transformer-too-deep"),
    # ranges where a value means something
    case("optim.momentum=nan", "optim.momentum", "momentum-nan"),
    case("optim.momentum=-1", "optim.momentum", "momentum-negative"),
    case("optim.momentum=1", "optim.momentum", "momentum-one"),
    case("optim=adam optim.betas=[0.9]", "optim.betas", "betas-one"),
    case("optim=adam optim.betas=[0.9,0.99,0.999]", "optim.betas", "betas-three"),
    case("optim=adam optim.betas=[0.9,1.0]", "optim.betas[1]", "beta2-one"),
    case("optim=adam optim.betas=[nan,0.9]", "optim.betas", "beta1-nan"),
    case("optim=adam optim.betas=[-0.1,0.9]", "optim.betas[0]", "beta1-negative"),
    case("optim.schedule=step optim.milestones=[10] optim.gamma=nan", "optim.gamma", "gamma-nan"),
    case("optim.schedule=step optim.milestones=[10] optim.gamma=0", "optim.gamma", "gamma-zero"),
    case("optim.schedule=step", "optim.milestones", "step-without-milestones"),
    case("optim.schedule=step optim.milestones=[0]", "optim.milestones", "milestone-zero"),
    case("optim.schedule=bogus", "optim.schedule", "schedule-unknown"),
    case("optim.schedule=cosine optim.warmup=20 train.steps=10",
         "optim.warmup=20 must be at most train.steps=10: the learning rate would never reach optim.lr",
         "warmup-longer-than-run"),
    # a milestone at or past the last update never drops the lr: a paper's schedule under a short run was constant
    case("optim.schedule=step optim.milestones=[32000,48000] train.steps=1000",
         "optim.milestones=[32000, 48000] must be below train.steps=1000: the lr never drops at 32000, 48000, after "
         "the last update (999)", "milestones-past-the-run"),
    case("optim.schedule=step optim.milestones=[5,10] train.steps=10", "the lr never drops at 10,",
         "milestone-at-the-run's-end"),
    case("train.steps=-1", "train.steps", "steps-negative"),
    case("train.steps=1e23", "train.steps", "steps-1e23"),
    case("train.steps=2000000000", "train.steps", "steps-too-many"),
    case("train.batch_size=0", "train.batch_size", "batch-zero"),
    case("train.batch_size=100000", "train.batch_size", "batch-above-mnist1d"),
    case(f"{G} data.n_train=64 train.batch_size=65", "train.batch_size", "batch-above-n-train"),
    case("norm=batchnorm train.batch_size=1", "train.batch_size", "batchnorm-batch-one"),
    case("model=resnet train.batch_size=1", "train.batch_size", "resnet-batchnorm-batch-one"),
    case("train.eval_every=0", "train.eval_every", "eval-every-zero"),
    case("train.check_every=0", "train.check_every", "check-every-zero"),
    case("probe.points=1", "probe.points", "probe-points-one"),
    case("probe.every=-1", "probe.every", "probe-every-negative"),
    case("probe.jacobian_inputs=0", "probe.jacobian_inputs", "jacobian-inputs-zero"),
    case("threads=-1", "threads", "threads-negative"),
    case("seed=-1", "seed", "seed-negative"),
    # norms and skips only where the family has them; a key the run ignores is an error
    case([*RNN, "norm=batchnorm"], "norm=batchnorm", "rnn-batchnorm"),
    case("model=lstm data=adding norm=layernorm", "norm=layernorm", "lstm-layernorm"),
    case("model.skip=residual model.depth=1", "model.depth", "mlp-residual-depth-one"),
    case("model=cnn model.skip=residual model.depth=1", "model.depth", "cnn-residual-depth-one"),
    case("model.alpha=0.5", "model.alpha", "alpha-without-skip"),
    case("norm.eps=1e-3", "norm.eps", "eps-without-norm"),
    case("model=resnet model.variant=fixup norm.eps=1e-3", "norm.eps", "resnet-fixup-eps"),
    case("model=cnn model.alpha=learnable", "model.alpha", "cnn-alpha-without-skip"),
    case("model.skip=residual model.alpha=abc", "model.alpha='abc' is not allowed", "alpha-word"),
    case("model.skip=residual model.alpha=nan", "model.alpha", "alpha-nan"),
    # (a number of a key that takes words too, as written: not '-1', '0.5')
    case("model.skip=residual model.alpha=inf", "model.alpha=inf is not allowed", "alpha-inf"),
    case("model.branch_layers=2 model.depth=5", "model.branch_layers", "branches-without-skip"),
    case("model.branch_layers=0", "model.branch_layers", "branches-zero"),
    case("model.skip=residual model.branch_layers=2 model.depth=4", "model.depth", "branches-do-not-divide"),
    case("model.variant=fixup", "model.variant=fixup", "fixup-without-skip"),
    case("model.skip=residual model.variant=fixup model.branch_layers=2 model.depth=5 norm=layernorm",
         "model.variant=fixup", "fixup-with-norm"),
    case("model.skip=residual model.variant=fixup", "model.variant=fixup", "fixup-one-layer-branches"),
    case("model.skip=residual model.variant=fixup model.branch_layers=2 model.depth=5 model.alpha=0.5",
         "model.alpha=0.5 does not apply to model.variant=fixup", "fixup-alpha"),
    case("model.variant=bogus", "model.variant", "mlp-variant-unknown"),
    case("model.skip=bogus", "model.skip", "skip-unknown"),
    case("model.activation=bogus", "model.activation", "activation-unknown"),
    # a mistyped choice gets its nearest choices, or those it begins
    case("model.activation=tahn", "model.activation='tahn' is not allowed (did you mean tanh?); choices:",
         "activation-misspelled"),
    case("model=mlpp", "model='mlpp' is not a known choice (did you mean mlp?); choices:", "family-misspelled"),
    # a conv net over (T, features) sequences: it ran, the time steps its channels, convolving across 2 features
    case("model=cnn model.depth=2 data=adding data.T=20 data.n_train=64 data.n_test=32 train.batch_size=16",
         "data=adding gives sequences of 20 steps x 2 features: model=cnn would take the 20 steps as channels and "
         "convolve across the features; use model=rnn, lstm, gru, transformer or mlp", "cnn-over-time-major"),
    # more windows than the text holds: the same windows again, and 20 million filled 3 GB over minutes
    case("model=transformer data=chars data.T=8 data.n_train=20000000", "data.n_train=20000000 is more than the ",
         "chars-n-train-past-the-text"),
    case("model=transformer data=chars data.T=8 data.n_test=100000000", "distinct windows of 9 characters "
         "(data.T=8) its part of the text holds (data.test_fraction=0.1); at most ", "chars-n-test-past-the-text"),
    # (a window longer than the text: data.T's fault, not that of data.n_train at its default)
    case("model=rnn data=chars data.T=1000000", "data.T=1000000 is longer than a split of the text (",
         "chars-T-past-the-text"),
    case("init=xavier", "init='xavier' is not a known choice (did you mean xavier_normal or xavier_uniform?)",
         "init-prefix"),
    case([*RNN, "model.activation=gelu"], "model.activation", "rnn-gelu"),
    case("model=lstm data=adding model.activation=relu", "model.activation", "lstm-relu"),
    case([*RNN, "model.recurrent_init=bogus"], "model.recurrent_init", "recurrent-init-unknown"),
    case([*RNN, "model.hidden=0"], "model.hidden", "hidden-zero"),
    case("model.depth=0", "model.depth", "depth-zero"),
    case("model.width=0", "model.width", "width-zero"),
    case("model=cnn model.kernel=4", "model.kernel", "cnn-even-kernel"),
    case("model=cnn model.kernel=0", "model.kernel", "cnn-kernel-zero"),
    case("model=cnn model.stride=0", "model.stride", "cnn-stride-zero"),
    case("model=cnn model.dims=3", "model.dims", "cnn-dims"),
    case("model=resnet model.depth=20", "model.depth", "resnet-depth"),
    case("model=resnet model.depth=1", "model.depth=1 must be 6n+1 for a resnet", "resnet-depth-one"),  # (6*0+1)
    case("model=transformer data=chars model.dropout=1", "model.dropout=1 must be in [0, 1)", "dropout-one"),
    case("model=resnet model.widths=[16,32]", "model.widths", "resnet-two-stages"),
    case("model=resnet model.variant=fixup model.skip=none", "model.variant", "resnet-plain-fixup"),
    case("model=resnet norm=layernorm", "norm=layernorm", "resnet-layernorm"),
    # the batchnorm variant's own norm, named again: the same net as norm=none, a second row of ls that read as
    # one without batch norm (a sweep model=mlp,resnet norm=none,batchnorm)
    case("model=resnet norm=batchnorm", "norm=batchnorm does not apply to model=resnet: its normalization is "
                                        "model.variant (batchnorm | fixup | skipinit; here batchnorm)", "resnet-batchnorm"),
    case("model=resnet model.variant=bogus", "model.variant", "resnet-variant-unknown"),
    case("init=kaiming_normal init.mode=fan_avg", "init.mode", "kaiming-mode"),
    case("probe.layer_jacobians=true", "probe.layer_jacobians", "layer-jacobians-alone"),
    # data
    case(f"{G} data.scale=nan", "data.scale", "scale-nan"),
    case(f"{G} data.scale=-1", "data.scale=-1 is not allowed", "scale-negative"),
    case(f"{G} data.scale=0", "data.scale=0 is not allowed", "scale-zero"),  # (all-zero inputs)
    case(f"{G} data.scale=abc", "data.scale='abc' is not allowed", "scale-word"),
    case(f"{G} data.scale=qstr", "data.scale='qstr' is not allowed (did you mean qstar?)", "scale-typo"),
    case(f"{G} data.scale=qstar model.activation=relu init=meanfield init.sw2=2",
         "data.scale=qstar", "qstar-without-fixed-point"),
    case(f"{G} data.task=bogus", "data.task", "task-unknown"),
    case(f"{G} data.task=regression data.classes=5", "data.classes", "regression-classes"),
    case(f"{G} data.distribution=bogus", "data.distribution", "distribution-unknown"),
    case(f"{G} data.classes=1", "data.classes", "classes-one"),
    case(f"{G} data.dim=0", "data.dim", "dim-zero"),
    case([*RNN[:2], "data.T=1"], "data.T", "adding-T-one"),
    case("model=lstm data=copy data.copy_len=0", "data.copy_len", "copy-len-zero"),
    # (beyond float32: 1e39 made every input inf, read as "diverged at step 0"; 1e-50 every input 0)
    # (1e20: the inputs' norms read inf)
    case(f"{G} data.scale=1e39", "data.scale=1e39 is outside [1e-15, 1e+15], where the squares of float32 inputs "
         "scaled by it (their norms, the first layer's statistics) overflow to inf", "scale-overflows"),
    case(f"{G} data.scale=1e20", "data.scale=1e20 is outside [1e-15, 1e+15]", "scale-squares-overflow"),
    case(f"{G} data.scale=1e-50", "data.scale=1e-50 is outside [1e-15, 1e+15], where the squares of float32 inputs "
         "scaled by it (their norms, the first layer's statistics) flush to 0", "scale-underflows"),
    # (one symbol or one value: every answer is it, learned with no memory, acc 1)
    case("model=lstm data=copy data.n_symbols=1", "data.n_symbols=1 must be >= 2", "copy-one-symbol"),
    case("model=transformer data=recall data.n_values=1", "data.n_values=1 must be >= 2", "recall-one-value"),
    case("data=mnist data.augment=true", "data.augment", "augment-not-cifar"),
    case("data=mnist data.subset=-1", "data.subset", "subset-negative"),
    # names, devices, groups, types and unknown keys
    case("name=../outside", "name=", "name-parent"),
    case("name=/abs", "name=", "name-absolute"),
    case(f"name={'a' * 300}", "name=", "name-300-characters"),
    case("device=tpu", "device", "device-unknown"),
    case("+experiment=doesnotexist", "experiment", "experiment-unknown"),
    case("init=bogus", "init", "init-unknown"),
    case("model.depth=abc", "model.depth", "depth-not-int"),
    case("model.nonexistent=1", "model.nonexistent", "unknown-key"),
    # a misspelled key gets its nearest keys, and a section's misspelling its section
    case("model.dpeth=10", "unknown key 'model.dpeth' (did you mean model.depth?)", "misspelled-depth"),
    case("trian.steps=5", "(did you mean train.steps?); sections: model, data, init, norm, optim, probe, train,",
         "misspelled-section"),
    case("seeed=1", "(did you mean seed?)", "misspelled-seed"),
    # a boolean is true or false: OmegaConf read 2, -1, yes and on as booleans, each spelling a run folder of its own
    case("data=cifar10 data.augment=2", "data.augment=2 is not allowed: data.augment is true or false", "bool-two"),
    case("probe.jacobian=-1", "probe.jacobian=-1 is not allowed: probe.jacobian is true or false", "bool-minus-one"),
    case("data=mnist data.download=yes", "data.download=yes is not allowed: data.download is true or false",
         "bool-yes"),
    case("probe.jacobian='on'", "probe.jacobian=on is not allowed: probe.jacobian is true or false", "bool-quoted-on"),
    # Hydra stops at the first unknown key; the message names every one, so one retry fixes them all
    case("model.dpth=3 train.stps=2 lr=0.1 hydra.verbose=true", "unknown keys 'model.dpth' (did you mean "
         "model.depth?), 'train.stps' (did you mean train.steps?), 'lr' (did you mean optim.lr?); sections:",
         "three-unknown-keys"),
    case("modle=cnn", "unknown key 'modle' (did you mean model?)", "misspelled-group"),
    case("model.name=cnn", "model.name='cnn' names another kind of model than the one composed: choose it with "
         "model=cnn", "family-by-name"),
    # a key added by hand that no model reads: it was told as another kind of model named by model.name
    case("+model.foo=1", "model.foo is not a key of model=mlp (its keys: activation, alpha, branch_layers, depth, "
         "skip, variant, width): a key added with + is read by nothing", "added-key-no-model-reads"),
    case("optim=adam +optim.bar=1", "optim.bar is not a key of optim=adam (its keys:", "added-key-no-optimizer-reads"),
    # a milestone twice dropped the lr by gamma^2 there, without a word
    case("train.steps=50 optim.schedule=step optim.milestones=[10,30,10]", "optim.milestones=[10, 30, 10] lists 10 "
         "more than once; each milestone drops the lr once (by optim.gamma), e.g. [10, 30]", "milestone-twice"),
    # the keys the choice reads: xavier's gain alone (mode, sb2 and sw2 were listed, then said not to apply)
    case("init=xavier_normal +init.gian=2", "init.gian is not a key of init=xavier_normal (its keys: gain): a key "
         "added with + is read by nothing", "added-key-lists-the-inits-own"),
    case("init=standard +init.gain2=2", "init.gain2 is not a key of init=standard (it takes no keys)",
         "added-key-init-of-no-keys"),
    case("seeds=3", "top-level keys: seed, device, threads, name, results", "unknown-key-lists-top-level"),
    # a list key: a,b would sweep its items one by one, a single value is not a list; each says how to write it
    case("optim=adam optim.betas=0.9,0.99", "but optim.betas is a list: write optim.betas=[0.9,0.99]",
         "list-key-comma"),
    case("optim.schedule=step optim.milestones=100",
         "optim.milestones=100 is not a list: write optim.milestones=[100]", "list-key-scalar"),
    case("model=resnet20 model.widths=16,32,64", "write model.widths=[16,32,64]", "list-key-widths"),
    case("optim.betas=[0.9,0.99]", "optim.betas", "betas-for-sgd"),
    case("optim=adam optim.momentum=0.5", "optim.momentum", "momentum-for-adam"),
    case(f"model.activation={LONG}", "model.activation", "100kB-activation"),
    case(f"{G} data.scale={LONG}", "data.scale", "100kB-scale"),
    # ++k=v after k=v: a sweep ran some points with each value, in folders named by the other
    case("model.width=16 ++model.width=4", "model.width=16 and ++model.width=4 set one key two ways",
         "plus-plus-after-plain"),
    case("~model.depth", "~model.depth deletes a setting, which gradflow's configs do not allow", "tilde-delete"),
]


def test_the_catalogue_is_large():
    assert len(CASES) >= 60


@pytest.mark.parametrize("overrides, needle", CASES)
def test_bad_config_is_one_line_and_writes_nothing(cli, results, overrides, needle):
    out = cli("run", "threads=1", *overrides, f"results={results}")
    assert out.exit_code == 1, out.output
    assert "Traceback" not in out.output
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error:") and needle in lines[0], lines[0]
    assert len(lines[0]) < 400, "long values are shortened"
    assert not results.exists()


@pytest.mark.parametrize("word, choices, said", [
    ("dpth", ["model.depth", "model.activation"], " (did you mean model.depth?)"),  # tables show it as depth
    ("TANH", ["tanh", "relu"], " (did you mean tanh?)"),
    ("model.dpth", ["model.depth", "model.width"], " (did you mean model.depth?)"),
    ("zzz", ["model.depth"], ""),
    # a short start of few choices (`reproduce he`); of many, or one character, none
    ("he", ["glorot2010", "he2015", "he2016"], " (did you mean he2015 or he2016?)"),
    ("s", ["sigmoid-textbook", "skipinit2020"], ""),
    ("re", ["relu", "relu6", "rrelu", "resnet20", "resnet56"], ""),
])
def test_did_you_mean_reads_a_dotted_key_by_its_last_part_too(word, choices, said):
    from gradflow.errors import did_you_mean

    assert did_you_mean(word, choices) == said


def test_did_you_mean_names_a_key_and_its_short_name_once_by_the_key_in_order():
    from gradflow.errors import did_you_mean

    short = {"depth": "model.depth", "width": "model.width"}
    for typo in ("dpth", "dpeth", "widht"):  # (the short name nearer or tied: alphabetical order decided)
        assert did_you_mean(typo, ["model.depth", "model.width", "depth", "width"], same=short) == \
            f" (did you mean {'model.width' if typo == 'widht' else 'model.depth'}?)"
    # another key between the two: the order the nearest came in is kept
    assert did_you_mean("dpeth", ["x.depth", "w.depth", "depth"], same={"depth": "x.depth"}) == \
        " (did you mean x.depth or w.depth?)"


@pytest.mark.parametrize("value", ["'true'", "FALSE", "${probe.histograms}"])
def test_a_boolean_quoted_in_capitals_or_read_from_another_key_is_allowed(cli, results, value):
    # (the check that refuses data.augment=2 refused 'true' itself: "probe.jacobian=true is not allowed")
    out = cli("run", "threads=1", "model.depth=2", "train.steps=1", f"probe.jacobian={value}", f"results={results}")
    assert out.exit_code == 0, out.output


def test_a_key_forced_with_plus_plus_is_the_same_run_and_folder_as_plain(cli, results):
    # ++model.width=4 sets the key as model.width=4 does: it named its folder "++model.width=4,..."
    from gradflow.overrides import job_name

    assert job_name(["++model.width=4", "model.depth=2"]) == job_name(["model.depth=2", "model.width=4"])
    out = cli("sweep", "threads=1", G, "train.steps=2", "model.depth=2,3", "++model.width=4,8", "--name", "pp",
              f"results={results}")
    assert out.exit_code == 0, out.output
    for depth in (2, 3):
        for width in (4, 8):
            job = results / "pp" / f"model.depth={depth},model.width={width}"
            assert f"width: {width}" in (job / "config.yaml").read_text(), job


def test_a_boolean_written_true_or_True_is_one_run_and_folder(cli, results):
    # Hydra reads true, True and TRUE as the one boolean: probe.jacobian=True ran into a folder of its own
    # beside probe.jacobian=true's, the same run twice; a quoted 'True' is a text, and stays its own
    from gradflow.overrides import job_name

    assert job_name(["probe.jacobian=True", "model.depth=2"]) == job_name(["model.depth=2", "probe.jacobian=true"])
    assert job_name(["+flag=FALSE"]) == "+flag=false" and job_name(["+tag='True'"]) != job_name(["+tag=true"])
    assert job_name(["+tag=Trueish"]) == "+tag=Trueish"
    small = ["threads=1", G, "train.steps=2", "model.depth=2", f"results={results}", "name=b"]
    assert cli("run", *small, "probe.jacobian=true").exit_code == 0
    out = cli("run", *small, "probe.jacobian=True")
    assert out.exit_code == 0, out.output
    assert [p.name for p in (results / "b").iterdir() if p.is_dir()] == [job_name(["model.depth=2", "probe.jacobian=true",
                                                                                   G, "train.steps=2"])]


def test_one_setting_written_two_ways_is_one_run_folder_of_single_runs(cli, results):
    # model.depth="2" beside model.depth=2 (and optim.lr=1e-2 beside 0.01): one config, and two folders of the
    # same run that ls showed as two rows; the second is rerun in the first's folder. A sweep already said so
    import shutil

    from gradflow import store

    small = ["threads=1", G, "train.steps=2", f"results={results}", "name=q"]
    # (model.alpha and data.scale, strings in the schema for their words, hold numbers too: alpha=1 is alpha=1.0)
    for first, second in (("model.depth=2", 'model.depth="2"'), ("optim.lr=1e-2", "optim.lr=0.01"),
                          ("data.scale=2", "data.scale=2.0")):
        assert cli("run", *small, first).exit_code == 0
        job = results / "q" / job_name([first, G, "train.steps=2"])
        staged = store.staging_dir(job)  # (a replacement's hidden folder, left by a killed process: not taken)
        shutil.copytree(job, staged)
        out = cli("run", *small, second)
        assert out.exit_code == 0 and f"results: {job}" in " ".join(out.output.split()), out.output
        assert not staged.exists()  # (the rerun of the same settings ran there, then took its run's place)
    folders = sorted(p.name for p in (results / "q").iterdir() if p.is_dir())
    assert folders == sorted([job_name(["model.depth=2", G, "train.steps=2"]),
                              job_name(["optim.lr=1e-2", G, "train.steps=2"]),
                              job_name(["data.scale=2", G, "train.steps=2"])]), folders
    assert cli("run", *small, "model.depth=3").exit_code == 0  # (other settings: a folder of their own)
    assert len([p for p in (results / "q").iterdir() if p.is_dir()]) == 4


def test_a_conditional_key_at_its_default_written_otherwise_is_no_change(cli, results):
    # model.alpha=1 of a net without skips is its default, 1.0: it was refused as a change ("does not apply to
    # this run ... or set model.alpha=1 (its default)"), where model.alpha=2 is one
    small = ["threads=1", G, "train.steps=0", f"results={results}", "name=a"]
    assert cli("run", *small, "model.alpha=1").exit_code == 0
    out = cli("run", *small, "model.alpha=2")
    assert out.exit_code == 1 and "model.alpha=2 does not apply to this run" in out.output, out.output


# --- bounds at their edges (a mutation audit: each test fails where the bound moves by one) ---------------

def test_data_seed_above_numpy_range_is_refused():
    compose(["data.seed=4294967295"])  # the largest numpy seed is fine
    with pytest.raises(GradflowError, match=r"data\.seed=4294967296 must be <= 4294967295"):
        compose(["data.seed=4294967296"])


def test_a_subset_larger_than_the_dataset_counts_the_dataset():
    assert train_size(compose(["data=mnist", "data.subset=100000", "train.batch_size=64"]).data) == 60000
    with pytest.raises(GradflowError, match=r"train\.batch_size=65000 must be <= the 60000 training examples"):
        compose(["data=mnist", "data.subset=100000", "train.batch_size=65000"])
    # (a subset smaller than the default batch: the line says what to give, and the subset that limits it)
    with pytest.raises(GradflowError, match=r"^train\.batch_size=128 must be <= the 50 training examples of "
                                            r"data=mnist \(data\.subset=50\); give train\.batch_size=50 \(the whole "
                                            r"set a step\) or fewer$"):
        compose(["data=mnist", "data.subset=50"])


def test_a_warmup_as_long_as_the_run_is_allowed():
    compose(["optim.schedule=cosine", "optim.warmup=10", "train.steps=10"])  # reaches optim.lr at the last step
    with pytest.raises(GradflowError, match=r"optim\.warmup=11 must be at most train\.steps=10"):
        compose(["optim.schedule=cosine", "optim.warmup=11", "train.steps=10"])


def test_a_milestone_below_the_runs_steps_is_allowed():
    compose(["optim.schedule=step", "optim.milestones=[9]", "train.steps=10"])  # drops the lr for the last update
    compose(["optim.schedule=step", "optim.milestones=[500]", "train.steps=0"])  # probes the init only: no update


RECALL = ["model=transformer", "data=recall", "data.queries=2", "data.n_values=5", "data.n_train=32",
          "data.n_test=16", "train.batch_size=16"]


def test_recall_needs_as_many_keys_as_pairs():
    compose([*RECALL, "data.pairs=3", "data.n_keys=3"])
    with pytest.raises(GradflowError, match=r"data\.n_keys=2 must be >= data\.pairs=3"):
        compose([*RECALL, "data.pairs=3", "data.n_keys=2"])


def test_chars_needs_a_test_fraction_strictly_inside_0_1():
    compose(["model=transformer", "data=chars", "data.test_fraction=0.1", "train.batch_size=8"])
    for bad in ("0", "0.0", "1"):
        with pytest.raises(GradflowError, match=r"data\.test_fraction=.* must be strictly between 0 and 1"):
            compose(["model=transformer", "data=chars", f"data.test_fraction={bad}", "train.batch_size=8"])


def test_a_bad_value_given_after_a_good_one_is_named_as_written():
    """The error names the value that counts (the last), not an earlier one of the same key.
    (A bug this catches: override_value returns the first value given.)"""
    from gradflow.overrides import override_value

    assert override_value(["results=a", "model.depth=2", "results=b"], "results") == "b"
    with pytest.raises(GradflowError, match=r"^model\.depth='1\.5' is not a valid integer"):
        compose(["model.depth=2", "model.depth=1.5"])

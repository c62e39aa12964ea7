"""Bad input at the command level, through the real CLI: exit 1 (2 only for Typer's own usage errors),
one line on stderr naming the key or value at fault, no traceback, nothing written under results/.

The config-value rules (nan/inf, ranges, keys a family ignores) have their own catalogue in
tests/test_bad_input_config.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import pytest
import torch

from gradflow import store
from gradflow.config import CONF_DIR, parsed_overrides
from gradflow import sweep
from gradflow.errors import GradflowError
from tests.commands import on_a_terminal

SMALL = ["data=gaussian", "data.n_train=128", "data.n_test=64", "data.dim=8", "model.width=8",
         "train.steps=2", "train.eval_every=2", "threads=1"]
LONG = "x" * 100_000  # a pasted value: never echoed whole
MAX_LINE = 400  # an error line about a pasted value: the message and the key, never a 100 kB echo

# (command and its arguments, text the error line must contain); {results}, {study}, {file}, {runjson} are filled in
CASES = [
    # gradflow run: overrides the lexer rejects, options it does not have, bad keys, values and paths
    (["run", "--name", "x"], "--name is not an option of `gradflow run`"),
    (["run", "--steps=3"], "--steps=3 is not an option"),
    (["run", "name=ünïcødé"], "name=ünïcødé"),
    (["run", "model.depth=[1"], "model.depth=[1"),
    (["run", "model.depth=(1"], "model.depth=(1"),
    (["run", "model.depth"], "model.depth"),
    (["run", "model.depth=abc"], "model.depth"),
    (["run", "model.nope=1"], "model.nope"),
    (["run", "nope=1"], "nope"),
    (["run", "init=nope"], "init='nope'"),
    (["run", "model=nope"], "model='nope'"),
    (["run", "data=nope"], "data='nope'"),
    (["run", "norm=nope"], "norm='nope'"),
    (["run", "optim=nope"], "optim='nope'"),
    (["run", "probe=nope"], "probe='nope'"),
    (["run", "model.activation=nope"], "model.activation=nope"),
    (["run", f"model.activation={LONG}"], "model.activation="),
    (["run", f"name={LONG}"], "name="),
    (["run", "model.depth=0"], "model.depth=0"),
    (["run", "model.width=0"], "model.width=0"),
    (["run", "model.skip=sideways"], "model.skip=sideways"),
    (["run", "model.alpha=lots"], "model.alpha=lots"),
    (["run", "init=kaiming_normal", "init.mode=sideways"], "init.mode"),
    (["run", "init=meanfield", "init.sw2=-1"], "init.sw2=-1"),
    (["run", "optim.lr=-1"], "optim.lr=-1"),
    # a number below the smallest float reads as 0 (1e400 as inf is config's): it ran at lr 0, learning nothing
    (["run", "optim.lr=1e-400"], "optim.lr=1e-400 is below the smallest float (about 5e-324) and reads as 0"),
    (["sweep", "optim.lr=1e-3,1e-400"], "optim.lr=1e-400 is below the smallest float"),
    (["run", "optim.schedule=weird"], "optim.schedule=weird"),
    (["run", "train.steps=-1"], "train.steps=-1"),
    (["run", "train.steps=abc"], "train.steps"),
    # what was written, not OmegaConf's float of it ('10000000000.0'), and how to write it
    (["run", "train.steps=1e10"], "train.steps='1e10' is not a valid integer; write a whole number without a"),
    # a sweep's too, not Hydra's sweeper's rewriting of it ('100.0'), fixed or swept, the point named as typed
    (["sweep", "train.steps=1e2", "--name", "x"], "error: train.steps='1e2' is not a valid integer; write a whole"),
    (["sweep", "model.depth=2,3", "train.steps=1e2"], "error: train.steps='1e2' is not a valid integer; write a"),
    (["sweep", "train.steps=5,1e2"], "error: sweep point train.steps=1e2: train.steps='1e2' is not a valid integer"),
    # a float key's value as typed, not the config's float of it (optim.momentum=2.0), nor a range()'s value
    # as the config holds it (1.0, where Hydra lists the point as 1)
    (["run", "optim.momentum=2"], "error: optim.momentum=2 must be in [0, 1)"),
    (["sweep", "optim.momentum=0,2e0"], "error: sweep point optim.momentum=2e0: optim.momentum=2e0 must be in [0, 1)"),
    (["sweep", "optim.momentum=range(0,3)"], "error: sweep point optim.momentum=1: optim.momentum=1 must be in [0, 1)"),
    (["run", "=5"], "the override '=5' has no key; write key=value"),
    # + on one of gradflow's keys or groups: Hydra's "Could not append to config" / "override model: cnn",
    # put by a sweep or a reproduction on its first point (every point has the key)
    (["run", "+model.depth=3"], "+model.depth=3: model.depth is a key of gradflow's config, set without the +: "
                                "write model.depth=3"),
    # a key of another choice than the one given: it does not apply (dropping the + was the next error)
    (["run", "model=custom", "+model.depth=3"], "error: model.depth does not apply to model=custom, which takes "
                                                "model.target"),
    (["run", "+model=cnn"], "+model=cnn: model is a config group, whose choice is set without the +: write model=cnn"),
    (["sweep", "+model.depth=3,4"], "error: +model.depth=3,4: model.depth is a key of gradflow's config, set without "
                                    "the +: write model.depth=3,4"),
    (["reproduce", "he2015", "--quick", "+model.depth=3"], "error: +model.depth=3: model.depth is a key of gradflow's"),
    # a key of another section, or by its usual other name, is named where it is (model.lr offered model.ln)
    (["run", "train.lr=0.1"], "unknown key 'train.lr' (did you mean optim.lr?)"),
    (["run", "model.lr=0.1"], "unknown key 'model.lr' (did you mean optim.lr?)"),
    (["run", "lr=0.1"], "unknown key 'lr' (did you mean optim.lr?)"),
    (["run", "optim.learning_rate=0.1"], "unknown key 'optim.learning_rate' (did you mean optim.lr?)"),
    (["run", "train.epochs=3"], "unknown key 'train.epochs' (did you mean train.steps?)"),
    # a list typed with spaces reaches gradflow as several words (the shell splits it): each was "cannot read the
    # override 'model.depth=2,'", with no word of the space or of the word after it
    (["sweep", "model.depth=2,", "3"], "'model.depth=2,' and '3' look like one override split at spaces: write "
                                       "model.depth=2,3 (no space around = or after a comma)"),
    (["sweep", "norm=none,", "batchnorm,", "layernorm"], "'norm=none,', 'batchnorm,' and 'layernorm' look like one "
                                                         "override split at spaces: write norm=none,batchnorm,layernorm"),
    (["sweep", "model.depth=2", ",3"], "'model.depth=2' and ',3' look like one override split at spaces: write "
                                       "model.depth=2,3"),
    (["run", "seed=", "1"], "'seed=' and '1' look like one override split at spaces: write seed=1"),
    # an empty value before the split list is an override of its own (it joined the split, which then read as
    # nothing, and the error was the generic one)
    (["sweep", "data.cache=", "model.depth=2,", "3"], "'model.depth=2,' and '3' look like one override split at "
                                                      "spaces: write model.depth=2,3"),
    (["sweep", "model.depth=2,3,"], "the override 'model.depth=2,3,' ends with a comma: write model.depth=2,3"),
    (["sweep", "model.depth=,"], "the override 'model.depth=,' gives no value: write model.depth=VALUE, or "
                                 "model.depth=A,B,C to sweep"),  # (it said "write model.depth=", itself refused)
    (["sweep", "=5,6"], "the override '=5,6' has no key"),
    (["sweep", "model.depth=2,3", "--name", ""], "the sweep's name is empty: give --name NAME"),  # (results/sweep)
    # an error is put on a point only where the point causes it: a fixed key's typo is every point's
    (["reproduce", "he2015", "--quick", "model.dept=3"], "error: unknown key 'model.dept' (did you mean model.depth?)"),
    (["sweep", "model.depth=2,3", "model.dept=3"], "error: unknown key 'model.dept' (did you mean model.depth?)"),
    (["sweep", "optim=sgd,adam", "optim.momentum=2"], "sweep point optim=sgd: optim.momentum=2 must be in [0, 1)"),
    # two neighbouring letters swapped are a near miss (they scored 0.67, under the cut-off: no suggestion)
    (["run", "model=mpl"], "model='mpl' is not a known choice (did you mean mlp?)"),
    # a misspelled key added with + in a group of one schema: run on the defaults without a word
    (["run", "+train.step=5"], "train.step is not a key of train (did you mean train.steps?) (its keys: batch_size, "),
    (["sweep", "+probe.evry=1", "seed=0,1"], "probe.evry is not a key of probe (did you mean probe.every?)"),
    (["run", "+norm.epss=1"], "norm.epss is not a key of norm (did you mean norm.eps?) (its keys: eps): a key added "
                              "with + is read by nothing"),
    # an empty choice: Hydra's own words ("In 'config': Could not find 'model/' ... Config search path: ...")
    (["run", "model="], "model='' is not a known choice; choices: cnn, custom,"),
    (["sweep", "init=", "seed=0,1"], "init='' is not a known choice; choices: delta_orthogonal,"),
    (["run", "--hlep"], "--hlep is not an option of `gradflow run` (did you mean --help?)"),
    (["bench", "--workload", "resnet"], "--workload 'resnet' is not known (did you mean resnet20?)"),
    # a choice's case counts for nothing: --scale Quick is quick (so the override is what is refused)
    (["reproduce", "he2015", "--scale", "Quick", "model.dept=3"], "unknown key 'model.dept' (did you mean model.depth?)"),
    (["ls", "{study}", "--steps-to", "train_los<=1"], "--steps-to 'train_los<=1': metric 'train_los' was not recorded "
                                                      "(did you mean train_loss?)"),
    (["sweep", "model.depth=2,3", "name="], "the sweep's name is empty"),
    # sweeps a grid cannot list: one line for sweep, run and reproduce alike (Hydra's traceback in sweep)
    (["sweep", "model.depth=range(1,5,0)"], "model.depth=range(1,5,0) has a step of 0: range(start,stop[,step]) needs "
                                            "a step other than 0"),
    (["run", "model.depth=range(1,5,0)"], "model.depth=range(1,5,0) has a step of 0"),
    (["sweep", "model.depth=interval(1,3)"], "model.depth=interval(1,3) is a continuous interval, which a grid cannot "
                                             "list; give the values (a,b,c) or range(start,stop[,step])"),
    (["reproduce", "he2015", "--quick", "model.width=interval(1,3)"], "model.width=interval(1,3) is a continuous interval"),
    # a gf resolver's own message, whole (it was cut mid-word around an ellipsis)
    (["run", "optim.lr=${gf.dvi:0.5,model.depth}"], "optim.lr cannot be resolved: gf.dvi is no resolver (did you "
                                                    "mean gf.div?); gradflow's: gf.add, gf.sub, gf.mul, gf.div, gf.pow"),
    (["sweep", "optim.lr=${gf.div:0.5,model.nope}", "model.depth=2,3"],
     "optim.lr cannot be resolved: gf arithmetic: 'model.nope' is neither a number nor a numeric key of the config"),
    (["run", "train.batch_size=0"], "train.batch_size=0"),
    (["run", "train.eval_every=0"], "train.eval_every=0"),
    (["run", "probe.points=1"], "probe.points=1"),
    (["run", "threads=-1"], "threads=-1"),
    (["run", "seed=abc"], "seed"),
    (["run", "results="], "results= is empty: give the folder runs go under"),
    (["run", "seed=99999999999999999999"], "seed=99999999999999999999 must be <= 4294967295"),
    # torch's CPU generator keeps the low 32 bits: 2^32 + 1 was seed=1's run again
    (["run", "seed=4294967297"], "seed=4294967297 must be <= 4294967295 (torch's CPU generator keeps a seed's low "
                                 "32 bits: a larger one repeats a smaller one's run)"),
    (["run", "threads=3000000000"], "threads=3000000000 must be <= 2147483647"),  # (torch: "Overflow when unpacking long")
    (["run", "model.depth=1000000000"], "model.depth=1000000000 must be <= 100000"),  # (it built modules for ever)
    # a width no device holds (an extra zero or three) is refused before a rerun replaces any finished run
    (["run", "model.width=100000000000"], "model.width=100000000000 must be <= 100000 (a 100000 x 100000 layer is "
                                          "40 GB of float32 weights)"),
    # what fails while the data or the model is built: one line, nothing written (a traceback before)
    (["run", "data.dim=99999999999999999999"], "building the data or the model failed: TypeError:"),
    (["gradcheck", "data=gaussian", "data.dim=99999999999999999999"], "building the data or the model failed: TypeError:"),
    (["run", "device=tpu"], "device='tpu'"),
    (["run", "name=../outside"], "name=../outside"),
    (["run", "name=/abs"], "name=/abs"),
    # a '.' part wrote the runs into the results root itself (name=.), or named one folder two ways
    (["run", "name=."], "name=. must be a relative folder name inside"),
    # a key the command never reads: a sweep over gradcheck.mode trained one run twice, in two folders
    (["run", "gradcheck.mode=forward"], "gradcheck.mode=forward applies to `gradflow gradcheck` alone"),
    (["sweep", "gradcheck.mode=forward,reverse"], "gradflow sweep` reads no gradcheck.* key"),
    (["gradcheck", "train.steps=5"], "train.steps=5 does not apply to `gradflow gradcheck`, which trains nothing"),
    (["gradcheck", "name=foo"], "name=foo does not apply to `gradflow gradcheck`"),
    (["run", "name=./d"], "no '.' or '..' part"),
    (["run", "name=d/./e"], "name=d/./e must be"),
    (["sweep", "model.depth=2,3", "--name", "d/."], "name=d/. must be a relative folder name inside"),
    (["run", "results={file}"], "set results="),
    (["run", "hydra.run.dir=/tmp/elsewhere"], "use name=NAME and results=FOLDER"),
    (["run", "hydra.job.chdir=true"], "hydra.job.chdir=true"),
    (["run", "hydra.output_subdir=.h"], "hydra.output_subdir=.h"),
    # gradflow sweep: everything checked before any job starts
    (["sweep", "model.depth=range(1,0)"], "model.depth=range(1,0) sweeps over no value"),
    # glob() of a plain key said it swept no value (give one, e.g. range(1,5)), though re* matched relu
    (["sweep", "model.activation=glob(re*)"], "model.activation=glob(re*) selects no value: glob() picks among a "
                                              "config group's choices"),
    (["sweep", "model=glob(zz*)"], "model=glob(zz*) matches none of model's choices"),
    (["sweep", "seed=glob(*)"], "seed=glob(*) selects no value: glob() picks among a config group's choices"),
    (["sweep", "model.depth=2,02"], "the sweep points model.depth=2 and model.depth=02 are the same run"),
    # the rate of scalar parameters, where the net has none: a setting without effect
    (["run", "optim.scalar_lr_factor=0.1"], "optim.scalar_lr_factor=0.1 does not apply to this run: it has no scalar "
                                            "parameter (model.variant=fixup, or model.alpha=learnable with"),
    (["sweep", "model.depth=2,3", "optim.scalar_lr_factor=0.1"], "no point of this sweep takes optim.scalar_lr_factor"),
    # a number of a key that takes a word too: two folders of one run
    (["sweep", "model.skip=residual", "model.alpha=1,1.0"], "the sweep points model.alpha=1 and model.alpha=1.0 are "
                                                            "the same run"),
    (["sweep", "data.scale=2,2.0"], "the sweep points data.scale=2 and data.scale=2.0 are the same run"),
    (["sweep", "model.depth=2,3", "name=a,b"], "name=a,b is several names; a sweep writes one study: give one"),
    # a group given a list composed every file of it, the last winning: init=[standard,kaiming_normal] ran
    # kaiming_normal in a folder named for both; model=[mlp,cnn] was OmegaConf's merge error, init=null Hydra's
    (["run", "init=[standard,kaiming_normal]"], "init=[standard,kaiming_normal]: init takes one of its choices; "
     "several are swept with `gradflow sweep init=standard,kaiming_normal`; choices: delta_orthogonal, gpt2,"),
    (["sweep", "model=[mlp,cnn]"], "model=[mlp,cnn]: model takes one of its choices; several are swept with "
                                   "`gradflow sweep model=mlp,cnn`; choices: cnn, custom, gru,"),
    (["run", "init=null"], "init=null: init takes one of its choices; choices: delta_orthogonal,"),
    (["run", "init=[standard]"], "init=[standard]: init takes one of its choices; write init=standard; choices:"),
    (["sweep", "init=[standard,kaiming_normal],[xavier_normal]"], "init=[standard,kaiming_normal],[xavier_normal]: "
     "init takes one of its choices; several are swept with `gradflow sweep init=standard,kaiming_normal`"),
    (["sweep", "init=standard,null"], "init=standard,null: init takes one of its choices; choices: delta_orthogonal"),
    (["run", "experiment=[depth-study,edge-of-chaos]"], "experiment takes one of its choices; several are swept with "
                                                        "`gradflow sweep +experiment=depth-study,edge-of-chaos`"),
    (["run", "model.activation=null"], "model.activation=null is not allowed: give model.activation a value"),
    # a preset is added (+experiment=...), as every command of the README writes it: it said "unknown key"
    (["run", "experiment=depth-study"], "experiment=depth-study: an experiment preset is added with a +: write "
                                        "+experiment=depth-study; choices: depth-study, edge-of-chaos,"),
    (["run", "model.activation=tanh,relu"], "model.activation=tanh,relu is several values, and `gradflow run` "
                                            "trains one network: `gradflow sweep model.activation=tanh,relu ...`"),
    # an arm's runs are judged together as its seeds: glorot2010 with tanh,linear passed 13 of 13 claims as
    # one net (linear alone: 8 of 13)
    (["reproduce", "glorot2010", "--quick", "model.activation=tanh,linear"], "model.activation=tanh,linear is "
     "several values, and glorot2010's arms init and train judge their runs together as seeds: give one value (more "
     "seeds: seed=0,1,2,3,4), or compare the values with one reproduction each, into its own results=FOLDER"),
    (["reproduce", "he2015", "--quick", "optim.lr=range(1,3)"], "optim.lr=range(1,3) is several values, and "
                                                                "he2015's arm"),
    # an override that makes an arm's swept values one run: the error named neither the arm nor the override
    (["reproduce", "hochreiter1991", "--quick", "model.name=rnn", "results={results}"],
     "hochreiter1991's arm forget_bias sweeps model.forget_bias=0.0 and model.forget_bias=1.0, which are one run "
     "with model.name=rnn (its runs do not read that key then); drop the override or give another value"),
    (["reproduce", "he2015", "--name", "x"], "--name is not an option of `gradflow reproduce`; settings are "
                                             "key=value overrides (e.g. results=x, not --results x)"),
    # every command's unknown option in one form, with the nearest option or all of them (Click's said
    # "No such option: --dry-run", with its "Possible options" only where one was close)
    (["ls", "--dry-run"], "--dry-run is not an option of `gradflow ls`; its options: --where, --sort, --steps-to"),
    (["clean", "{study}", "--stal"], "--stal is not an option of `gradflow clean` (did you mean --stale?); see "
                                     "`gradflow clean --help`"),
    (["reproduce", "--dry-run"], "--dry-run is not an option of `gradflow reproduce`; its options: --list, --quick"),
    (["reproduce", "he2015", "--quick", "name=x"], "name=x does not apply to gradflow reproduce: its runs go to "
                                                   "results/reproduce/he2015-quick/"),
    (["sweep", "model.depth=2,0"], "sweep point"),
    # a key no point takes: copies of one run under two names (a sweep may set it where some point takes it)
    (["sweep", "init.sw2=1.0,1.76"], "no point of this sweep takes init.sw2: init.sw2 does not apply to "
                                     "init=xavier_normal, which takes init.gain; it is a key of init=meanfield"),
    (["sweep", "init=kaiming_normal,standard", "init.gain=1,2"], "no point of this sweep takes init.gain"),
    (["sweep", "model=rnn,mlp", "model.alpha=0.5"], "no point of this sweep takes model.alpha: it scales residual "
                                                    "branches (model.skip=residual)"),  # (it said ": None")
    (["sweep", "--points", "{alphapoints}"], "sweep point model.alpha=0.25,model.skip=none: model.alpha does not "
                                             "apply to this run: it scales residual branches"),
    # a reproduction's arms need not take the spec's shared keys, but a key given that no run takes changed nothing
    (["reproduce", "he2015", "--quick", "optim.gamma=0.5", "results={results}"],
     "no run of he2015 takes optim.gamma: optim.schedule=step reads it"),
    (["reproduce", "he2015", "--quick", "init.sw2=2", "results={results}"],
     "no run of he2015 takes init.sw2: init.sw2 does not apply to init="),
    (["sweep", "model.activation=tanh,nope"], "model.activation=nope"),
    (["sweep", "model.nope=1,2"], "model.nope"),
    # a swept key that no choice has is unknown at every point: it blamed the first ("sweep point train.lr=1e-2:")
    (["sweep", "train.lr=1e-2,abc"], "error: unknown key 'train.lr' (did you mean optim.lr?)"),
    # (two misspelled keys, named together: no point of the sweep is to blame)
    (["sweep", "model.dpth=3,4", "train.stps=1,2"], "error: unknown keys 'model.dpth' (did you mean model.depth?), "
                                                     "'train.stps' (did you mean train.steps?); sections:"),
    (["sweep", "init=xavier_normal,nope"], "init='nope'"),
    (["sweep", "hydra/launcher=ray"], "hydra/launcher='ray' is not known; choices: basic"),
    # launcher settings that meant nothing or failed later (Hydra's multi-line error, a traceback)
    (["sweep", "model.depth=2,3", "hydra.launcher.n_jobs=2"],
     "hydra.launcher.n_jobs=2 is a launcher setting, and the basic launcher has none; choose a launcher first: "
     "hydra/launcher=joblib hydra.launcher.n_jobs=2"),
    # (the launcher that has the setting: it said joblib, which then refused the partition)
    (["sweep", "model.depth=2,3", "hydra.launcher.partition=gpu"],
     "choose a launcher first: hydra/launcher=slurm hydra.launcher.partition=gpu"),
    (["sweep", "model.depth=2,3", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"],
     "hydra.launcher.n_jobs=0 is not allowed: n_jobs is the number of workers"),
    # a setting's value of the wrong kind: Hydra's 142-line traceback, or joblib's ValueError after the header
    (["sweep", "model.depth=2,3", "hydra/launcher=joblib", "hydra.launcher.verbose=abc"],
     "error: hydra.launcher.verbose=abc is not allowed: verbose is a whole number"),
    (["sweep", "model.depth=2,3", "hydra/launcher=joblib", "hydra.launcher.batch_size=abc"],
     "error: hydra.launcher.batch_size=abc is not allowed: batch_size is auto or a whole number, 1 or more"),
    (["sweep", "model.depth=2,3", "hydra/launcher=submitit_local", "hydra.launcher.mem_gb=abc"],
     "error: hydra.launcher.mem_gb=abc is not allowed: mem_gb is a whole number"),
    (["sweep", "model.depth=2,3", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=0"],
     "error: hydra.launcher.cpus_per_task=0 is not allowed: cpus_per_task counts something, 1 or more"),
    # a misspelled setting, or another launcher's, was Hydra's multi-line error after sweep.yaml was written
    (["sweep", "model.depth=2,3", "hydra/launcher=joblib", "hydra.launcher.njobs=2"],
     "hydra.launcher.njobs=2: the joblib launcher has no setting 'njobs' (did you mean n_jobs?); its settings: "
     "n_jobs, backend"),
    (["sweep", "model.depth=2,3", "hydra/launcher=submitit_local", "hydra.launcher.n_jobs=2"],
     "the submitit_local launcher has no setting 'n_jobs' (it is a setting of hydra/launcher=joblib); its settings: "
     "submitit_folder, timeout_min"),
    (["sweep", "model.depth=2,3", "hydra/launcher=joblib", "hydra.launcher.partition=gpu"],
     "the joblib launcher has no setting 'partition' (it is a setting of hydra/launcher=slurm); its settings: "
     "n_jobs"),
    (["sweep", "model.depth=2,3", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=-1"],
     "hydra.launcher.timeout_min=-1 is not allowed: timeout_min is each job's time limit in minutes (1 or more)"),
    (["sweep", "hydra.sweep.dir=/tmp/elsewhere"], "hydra.sweep.dir=/tmp/elsewhere is refused"),
    (["sweep", "hydra.sweep.subdir=../../../victim"], "hydra.sweep.subdir=../../../victim is refused"),
    (["sweep", "hydra.run.dir=/tmp/x"], "hydra.run.dir=/tmp/x is refused"),
    (["sweep", "model.depth=2,3", "--name", "../outside"], "name=../outside"),
    (["sweep", "model.depth=2,3", "--bogus"], "--bogus is not an option of `gradflow sweep`"),
    (["sweep", "name=ünïcødé", "model.depth=2,3"], "name=ünïcødé"),
    (["sweep", "model.depth=2,3", "results={file}"], "set results="),
    (["sweep", "--points", "{results}/missing.yaml"], "missing.yaml"),
    (["sweep", "--points", "{file}"], "must be a YAML list"),
    (["sweep", "model.depth=2,3", "--points", "{points}"], "--points and swept keys"),
    # reading commands: missing folders, bad options
    (["ls", "{results}/missing"], "missing does not exist"),
    # a folder beside it with a name near: a reproduction at --quick is in he2015-quick, not he2015
    (["report", "{study}-", "--out", "{results}/x.html"], "study- does not exist (did you mean "),
    (["ls", "{empty}"], "holds no runs"),
    (["ls", "{file}"], "a-file is a file, not a run or a folder of runs"),
    (["ls", "{runjson}"], "run.json is a file, not a run or a folder of runs: give its run's folder, "),
    (["ls", "{study}", "--where", "nonsense"], "--where 'nonsense' must be KEY=VALUE"),
    # a byte that is no UTF-8 (it reaches Python as a surrogate): pyarrow's UnicodeEncodeError, a traceback
    (["ls", "{study}", "--where", "depth=\udcff"], "--where depth=\\udcff is no UTF-8 text"),
    (["plot", "{study}", "--kind", "profile", "--where", "depth=\udcff"], "is no UTF-8 text (a byte the terminal"),
    # accepted without a word: every steps-to cell read "-", the rows kept their order
    (["ls", "{study}", "--steps-to", "train_loss<=nan"], "--steps-to 'train_loss<=nan': nan is no threshold"),
    (["ls", "{study}", "--steps-to", "train_loss<=-inf"], "--steps-to 'train_loss<=-inf': -inf is no threshold; give "
                                                          "a finite number"),
    (["ls", "{study}", "model.depth=2"], "model.depth=2 does not exist (a filter? --where model.depth=2)"),
    (["ls", "{study}", "--sort", ""], "--sort '' names no column"),
    (["ls", "{study}", "--where", "nokey=1"], "--where key 'nokey' is not a column; choices: status (or any config key"),
    # a key and the short name ls shows it under are one suggestion ("model.activation or activation")
    (["ls", "{study}", "--where", "activaton=tanh"], "--where key 'activaton' is not a column (did you mean "
                                                     "model.activation?)"),
    (["ls", "{study}", "--where", "model.depth=9"], "--where model.depth=9 matches no run; model.depth here: 2"),
    (["ls", "{study}", "--where", "model.depth=2", "--where", "seed=1"],
     "seed=1 matches no run of those left; seed here: 0"),
    (["ls", "{study}", "--sort", "nokey"], "--sort"),
    (["ls", "{study}", "--sort", "-ratio ned"], "--sort key 'ratio ned' is not a column (did you mean ratio end?)"),
    (["ls", "{study}", "--rate", "grad_nrm"], "--rate 'grad_nrm' is not a probed quantity (did you mean grad_norm?); "
                                             "choices: grad_norm, bias_grad_norm"),
    (["plot", "{results}/missing"], "missing does not exist"),
    (["plot", "{study}", "--kind", "nope"], "--kind 'nope' is not allowed"),
    (["plot", "{study}", "--kind", "profil"], "--kind 'profil' is not allowed (did you mean profile?); choices: "),
    (["theory", "-a", "TANH", "--sw2", "1"], "--activation='TANH' is not a known activation (did you mean tanh?)"),
    (["run", "data.seed=-1"], "data.seed=-1 must be >= 0"),  # (mnist1d's failed at its start, in numpy's words)
    (["sweep", "hydra/launcher=joblb"], "hydra/launcher='joblb' is not known (did you mean joblib?); choices: "),
    (["run", "model.activation=ReLU"], "model.activation='ReLU' is not allowed (did you mean relu?)"),
    (["plot", "{study}", "--format", "bmp"], "--format 'bmp'"),
    (["plot", "{study}", "--kind", "profile", "--step", "soon"], "--step 'soon'"),
    (["compare", "{results}/missing", "{study}"], "missing does not exist"),
    (["ls", "{study}", "--csv", "--json"], "--csv and --json are two formats of the same table; give one"),
    (["clean", "{study}"], "--stale"),
    (["report", "{study}", "--out", "{results}/typo/page.html"], "/typo does not exist; create it first"),
    (["report", "{study}", "--out", "{results}/typo/"], "/typo/: no such folder; create it first"),  # not a file "typo"
    (["report", "{study}", "--out", "{results}/page.txt"], "page.txt names a .txt file and the page is HTML: give "),
    (["report", "{study}", "--out", "{results}/pages"], "/pages is no folder here and no .html file: give "),
    (["compare", "{study}", "{study}"], "is given twice"),
    # a run beside the folder that holds it: every row read x1 against itself
    (["compare", "{study}/..", "{study}"], "{study} is inside {study}/.., which holds its runs already: compare "
                                             "needs folders of different runs"),
    (["report", "{study}", "{study}/.."], "{study} is inside {study}/.., which holds its runs already"),
    # a rate with nothing to fit says why, and offers the other quantities (it listed itself among them)
    (["ls", "{study}", "--rate", "act_std"], "--rate act_std: no run has act_std at 3 or more layers between the 3 left"),
    # a misspelled name among the choices: the nearest one named
    (["plot", "{study}", "--kind", "profile", "--quantity", "grad_nrm"], "(did you mean grad_norm?)"),
    (["plot", "{study}", "--kind", "grid", "--x", "model.depth", "--y", "seed", "--value", "final.train_ac"],
     "(did you mean final.train_acc?)"),
    (["plot", "{study}", "--kind", "grid", "--x", "model.depth", "--y", "seed", "--value", "chi1 mea"],
     "(did you mean chi1 meas?)"),
    # a mistyped option names the one it is nearest to (sweep's advice used to be "name=x, not --name x")
    (["sweep", "--nmae", "x"], "--nmae is not an option of `gradflow sweep` (did you mean --name?)"),
    (["reproduce", "he2015", "--quik"], "--quik is not an option of `gradflow reproduce` (did you mean --quick?)"),
    (["clean", "{results}/missing", "--stale"], "missing does not exist"),
    # another command's option: run's --points was read as probe.points=p.yaml, sweep's --scale as data.scale
    (["run", "--points", "p.yaml"], "--points is an option of `gradflow sweep`, not of `gradflow run`; see"),
    (["sweep", "model.depth=2,3", "--scale", "quick"], "--scale is an option of `gradflow reproduce`, not of "
                                                       "`gradflow sweep`"),
    (["ls", "{study}", "--kind", "profile"], "--kind is an option of `gradflow plot`, not of `gradflow ls`"),
    (["run", "--steps", "3"], "(train.steps=3, not --steps 3)"),  # (bench's --steps is no sibling's)
    # (the whole disk searched, other projects' runs under /tmp offered for removal)
    (["clean", "/", "--stale", "-y"], "error: / is the file system's root: give a results folder, or a study in it"),
    (["clean", str(Path.home()), "--stale", "-y"], "is your home folder: give a results folder"),
    (["theory", "--activation", "nope"], "nope"),
    # a number as typed, not Typer's float of it (--sw2=-1.0), and 1e400 said to read as inf
    (["theory", "-a", "tanh", "--sw2", "-1"], "error: --sw2=-1 must be a finite number >= 0 (a variance)"),
    (["theory", "-a", "tanh", "--sb2", "1e400"], "error: --sb2=inf must be a finite number >= 0 (a variance) (a number "
                                                 "past 1.8e308, as 1e400, reads as inf)"),
    (["theory", "-a", "tahn"], "--activation='tahn' is not a known activation (did you mean tanh?); choices: "),
    (["theory", "--activation", "relu", "--critical", "--depth", "10"], "--depth 10 does not apply to --critical"),
    (["reproduce", "nope"], "nope"),
    (["sweep", "model.depth=2,3", "--name", "a", "name=b"], "the sweep is named twice, --name a and name=b; give one"),
    (["reproduce", "he2015", "--scale", "huge"], "--scale 'huge' is not allowed; choices: quick, default, paper"),
    (["reproduce", "he2015", "--scale", "quik"], "--scale 'quik' is not allowed (did you mean quick?); choices: "),
    (["reproduce", "sigmoid-textbok"], "'sigmoid-textbok' is not a known experiment (did you mean sigmoid-textbook?)"),
    (["reproduce", "he2015", "--quick", "--scale", "paper"], "--quick and --scale paper ask for two scales; give one"),
    (["bench", "--rounds", "0"], "--rounds 0 is too few: at least 1"),
    (["bench", "--steps", "0"], "--steps 0 is too few: at least 12"),
    (["bench", "--device", "gpu"], "--device 'gpu' is not allowed; choices: auto, cpu, cuda, cuda:N, mps"),
    (["bench", "--sweep", "--workload", "mlp"], "--workload does not apply to --sweep"),  # (it was ignored)
    (["reproduce", "--quick"], "--quick applies to a run of an experiment: give its name (gradflow reproduce NAME --quick)"),
    # --list NAME printed its table, the run's options and overrides (a misspelled key) passed over without a word
    (["reproduce", "he2015", "--list", "model.dpth=3"], "error: model.dpth=3 applies to a run of he2015, and --list "
                                                        "runs nothing; drop --list to run it"),
    (["reproduce", "he2015", "--list", "--force", "--quick"], "error: --quick and --force apply to a run of he2015, "
                                                              "and --list runs nothing"),
    # (every option with its value: the advice was `gradflow reproduce he2015 --scale`, which has none)
    (["reproduce", "he2015", "--scale", "quick", "--list", "seed=1"], "drop --list to run it (gradflow reproduce "
                                                                      "he2015 --scale quick seed=1), or the rest"),
    (["reproduce", "--scale", "quick"], "give its name (gradflow reproduce NAME --scale quick)"),
    (["bench", "--clock", "sundial"], "--clock 'sundial'"),
    (["bench", "--clock", "cpuu"], "--clock 'cpuu' is not known (did you mean cpu?)"),
    (["bench", "--threads", "0"], "--threads 0 is not allowed: give intra-op thread counts of 1 or more"),
    # (beyond 1e200 the quadrature's infinity: xi_q read 0 and, at 1e308, chi_1 54 decades high)
    (["theory", "-a", "tanh", "--sw2", "1e250"], "--sw2=1e+250 is beyond what the theory computes: at most 1e+200"),
    # a value given twice was timed twice: two mlp columns, and a warning comparing 1 thread with 1
    (["bench", "--threads", "1", "--threads", "1"], "--threads 1 is given twice; give each once"),
    (["bench", "--workload", "mlp", "--workload", "mlp"], "--workload mlp is given twice; give each once"),
    (["gradcheck", "model.depth=2", "model.width=8", "norm=batchnorm", "--batch", "1"],
     "--batch 1 must be >= 2 with batch normalization"),
    # an empty path (an unset variable) is the current folder to Typer: clean would clean everything below it
    (["clean", "", "--stale", "-y"], "the path is empty (an unset variable?); give the folder, e.g. gradflow clean "),
    # ... and ls, plot, compare and report worked on the current folder (plot drew into it)
    (["ls", ""], "the path is empty (an unset variable?); give the folder, e.g. gradflow ls "),
    (["plot", " "], "the path is empty (an unset variable?); give the folder, e.g. gradflow plot "),
    (["compare", "{study}", ""], "the path is empty (an unset variable?); give the folder, e.g. gradflow compare "),
    (["report", ""], "the path is empty (an unset variable?); give the folder, e.g. gradflow report "),
    # an empty --out wrote the figures into the current folder
    (["plot", "{study}", "--out", ""], "--out is empty (an unset variable?); give a folder or a figure file"),
    (["compare", "{study}", "{study}/..", "--out", " "], "--out is empty (an unset variable?)"),
    (["theory", "phase", "-a", "tanh", "-o", ""], "--out is empty (an unset variable?)"),
    # a mistyped folder was made without a word (report --out refused it)
    (["theory", "phase", "-a", "tanh", "-o", "{empty}/no/sub/"], "the folder {empty}/no does not exist; create it"),
    (["plot", "{study}", "--kind", "profile", "--out", "{empty}/no/fig.png"], "/no does not exist; create it first"),
    (["theory", "-a", "tanh", "phase", "-a", "relu"], "--activation is given twice (tanh before `phase`, relu after "
                                                      "it); give it once"),
    # gradcheck read a mistyped option as an override ("cannot parse an override (LexerNoViableAltException)")
    (["gradcheck", "--entry", "3"], "--entry is not an option of `gradflow gradcheck` (did you mean --entries?)"),
    (["gradcheck", "-h"], "-h is not an option of `gradflow gradcheck`; settings are key=value overrides"),
    # an option that names a config key by its last part: the override it was meant as, its value too
    (["run", "--steps", "3"], "--steps is not an option of `gradflow run`; settings are key=value overrides "
                              "(train.steps=3, not --steps 3)"),
    (["sweep", "--width=8,16"], "is not an option of `gradflow sweep`; settings are key=value overrides "
                                "(model.width=8,16, not --width=8,16)"),
    (["sweep", "--model", "cnn", "model.depth=2,3"], "is not an option of `gradflow sweep`; settings are key=value "
                                                   "overrides (model=cnn, not --model cnn)"),
    (["run", "--lr"], "is not an option of `gradflow run`; settings are key=value overrides (optim.lr=..., not --lr)"),
    # the key whole, a top-level key, its usual other name; a long list's whole items around "…"
    (["run", "--model.depth=3"], "is not an option of `gradflow run`; settings are key=value overrides "
                                 "(model.depth=3, not --model.depth=3)"),
    (["sweep", "--seed", "0,1"], "is not an option of `gradflow sweep`; settings are key=value overrides "
                                 "(seed=0,1, not --seed 0,1)"),
    (["run", "--learning-rate", "0.1"], "is not an option of `gradflow run`; settings are key=value overrides "
                                        "(optim.lr=0.1, not --learning-rate 0.1)"),
    (["run", "--steps="], "is not an option of `gradflow run`; settings are key=value overrides "
                          "(train.steps=..., not --steps=)"),
    (["sweep", "--width", ",".join(map(str, range(8, 401, 8)))],
     "is not an option of `gradflow sweep`; settings are key=value overrides (model.width=8,16,24,32,…,384,392,400, "
     "not --width 8,16,24,32,40,…,376,384,392,400)"),
    # a subcommand's is named by its whole command, the group's name first ("gradflow theory phase")
    (["theory", "phase", "--bogus"], "--bogus is not an option of `gradflow theory phase`; its options: --activation, "
                                     "--out, --help; see `gradflow theory phase --help`"),
    (["gradcheck", "hydra/launcher=joblib"], "applies to sweeps; `gradflow gradcheck` checks here, in this process"),
    (["gradcheck", "model.depth=2,3"], "several values, and `gradflow gradcheck` checks one network: give one value"),
    (["theory", "phase", "--activation", "tanh", "--out", "{file}/x.png"], "is a file, not a folder"),
    (["plot", "{study}", "--out", "{file}/figures"], "is not a folder; give --out <a writable folder>"),
    (["compare", "{study}", "{study}/..", "--out", "{file}"], "is not a folder; give --out <a writable folder>"),
    (["bench", "--workload", "nope"], "--workload 'nope'"),
]


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """One finished tiny run, for the reading commands."""
    from typer.testing import CliRunner

    from gradflow.cli import app

    results = tmp_path_factory.mktemp("bad-input") / "results"
    out = CliRunner().invoke(app, ["run", *SMALL, "model.depth=2", f"results={results}", "name=study"])
    assert out.exit_code == 0, out.output
    return results / "study"


def _words(err: str) -> str:
    """The message with its whitespace collapsed, then again without the quotes around values, so a
    needle `key=value` also matches `key='value'`: what counts is that the key and the value are named."""
    words = " ".join(err.split())
    return words + "\n" + words.replace("'", "")


@pytest.mark.parametrize("args, needle", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_and_writes_nothing(cli, results, tmp_path, study, args, needle):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n")
    points = tmp_path / "points.yaml"
    points.write_text("- {model.depth: 2}\n")
    alpha_points = tmp_path / "alpha.yaml"  # (each point of a points file is a whole run: its keys apply to it)
    alpha_points.write_text("- {model.skip: residual, model.alpha: 0.5}\n- {model.skip: none, model.alpha: 0.25}\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    fill = {"{results}": str(results), "{study}": str(study), "{file}": str(a_file), "{points}": str(points), "{alphapoints}": str(alpha_points),
            "{empty}": str(empty), "{runjson}": str(next(study.rglob("run.json")))}
    argv = []
    for a in args:
        for k, v in fill.items():
            a = a.replace(k, v)
        argv.append(a)
    if argv[0] in ("run", "sweep"):  # the bad input last, so no default overrides it
        own = [] if any(a.startswith("results=") for a in argv) else [f"results={results}"]
        argv = [argv[0], *SMALL, *own, *argv[1:]]
    before = _files(study)
    out = cli(*argv)
    # a mistyped option exits 2, as Typer's own refusal of one does; any other bad input 1
    usage = "an option" in needle or "not --" in needle  # (an option the command does not have)
    assert out.exit_code == (2 if usage else 1), (out.exit_code, out.output[-2000:])
    err = out.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err[:2000]
    if any(LONG in a for a in args):
        assert len(err) <= MAX_LINE, err[:MAX_LINE + 100]
    assert "Traceback" not in out.output
    for k, v in fill.items():
        needle = needle.replace(k, v)
    assert needle in _words(err), (needle, err)
    assert not results.exists() or not any(results.rglob("*")), sorted(results.rglob("*"))
    assert not any(empty.iterdir()), sorted(empty.iterdir())
    assert _files(study) == before


@pytest.mark.parametrize("args, needle", [
    (["run", "--name", "x"], "--name is not an option"),
    (["sweep", "model.depth=range(1,0)"], "sweeps over no value"),
    (["ls", "/nonexistent/gradflow-results"], "does not exist"),
    (["run", "hydra.sweep.dir=/tmp/elsewhere"], "use name=NAME and results=FOLDER"),
])
def test_the_installed_entry_point_gives_the_same_one_line(tmp_path, args, needle):
    results = tmp_path / "results"
    extra = [f"results={results}"] if args[0] in ("run", "sweep") else []
    env = {**os.environ, "COLUMNS": "200"}
    exe = Path(sys.executable).parent / "gradflow"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gradflow"]
    out = subprocess.run([*cmd, *args, *extra], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == (2 if "is not an option" in needle else 1), out.stderr
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and needle in _words(err) and "Traceback" not in err, err
    assert not results.exists()


@pytest.mark.parametrize("args, line", [
    (["plot"], "error: Missing argument 'PATH'; see `gradflow plot --help`"),  # (PATH, as ls's usage names it)
    (["ls", ".", "--sortt", "x"], "error: --sortt is not an option of `gradflow ls` (did you mean --sort?); see "
                                  "`gradflow ls --help`"),
    (["runn"], "error: No such command 'runn'. Did you mean 'run'? commands: run, ls, sweep, clean, reproduce, "
               "report, bench, gradcheck, plot, compare, theory; see `gradflow --help`"),
    (["theory", "bogus"], "error: No such command 'bogus'; commands: phase; see `gradflow theory --help`"),
    # an option given no value: Click's "Option '--sort' requires an argument", with no word of the help
    (["ls", ".", "--sort"], "error: --sort needs a value; see `gradflow ls --help`"),
    (["theory", "phase", "--out"], "error: --out needs a value; see `gradflow theory phase --help`"),
    (["gradcheck", "--entries", "abc"], "error: Invalid value for '--entries' ('abc'): not a whole number; see"),
    (["theory", "-a", "tanh", "--sw2=abc"], "error: Invalid value for '--sw2' ('abc'): not a number; see"),
    # an option given twice: Click kept the last value without a word (--scale paper --scale quick ran quick)
    (["theory", "-a", "tanh", "--sw2", "1", "--sw2", "abc"], "error: --sw2 is given twice (--sw2 1, --sw2 abc); give "
                                                             "it once; see `gradflow theory --help`"),
    (["reproduce", "he2015", "--scale", "paper", "--scale=quick"], "error: --scale is given twice (--scale paper, "
                                                                   "--scale=quick); give it once; see"),
    (["theory", "-a", "tanh", "--activation", "relu", "--sw2", "2"], "error: --activation is given twice (-a tanh, "
                                                                     "--activation relu); give it once"),
    (["plot", "/nonexistent/study", "--format", "pdf", "--kind", "profile", "--format", "svg"],
     "error: --format is given twice"),  # (a path that is none: without the check it drew into the working folder)
    (["ls", ".", "--wide", "--wide"], "error: --wide is given twice (--wide, --wide); give it once"),
])
def test_typer_usage_errors_are_one_line_and_exit_2(args, line):
    # Typer's own usage errors, through the installed entry point: one line with Click's suggestion
    # (not Typer's boxed panel under a usage line), exit code 2
    exe = Path(sys.executable).parent / "gradflow"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gradflow"]
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(line), out.stderr


def test_an_invalid_value_in_process_names_no_value_from_another_command_line(cli):
    # in-process (a CliRunner, a notebook) sys.argv is not the command's: no value is read from it
    out = cli("theory", "-a", "tanh", "--sw2", "abc")
    assert out.exit_code == 2 and "Invalid value for '--sw2':" in out.output and "('" not in out.output


@pytest.mark.parametrize("args", [["reproduce", "he2015", "--scale", "huge"], ["reproduce", "nosuchpaper"],
                                  ["reproduce", "he2015", "--nmae"], ["reproduce", "he2015", "+model.depth=3"]])
def test_a_bad_reproduction_prints_nothing_before_its_error(cli, args):
    out = cli(*args)
    assert out.exit_code == (2 if args[-1] == "--nmae" else 1), out.output  # (a mistyped option: 2, as Typer's)
    assert out.stderr.startswith("error:") and out.stdout == "", out.output


@pytest.mark.parametrize("override, said", [
    ("model.activaton=relu", "unknown key 'model.activaton' (did you mean model.activation?)"),
    ("optim.gamma=0.5", "no run of he2015 takes optim.gamma"),
])
def test_a_reproductions_override_refused_at_planning_is_its_only_line(cli, results, override, said):
    # the header (the rule and the paper) came first, as if the reproduction had started
    out = cli("reproduce", "he2015", "--quick", override, f"results={results}")
    assert out.exit_code == 1 and out.stdout == "", out.output
    assert out.stderr.startswith("error:") and said in out.stderr and len(out.stderr.strip().splitlines()) == 1, \
        out.stderr
    assert not list(results.glob("**/run.json"))


@pytest.mark.parametrize("args, said", [
    # a second experiment's name was read as an override ("write key=value"), and beside --list the advice
    # was to drop --list and run `gradflow reproduce all he2015`, which failed the same way
    (["all", "--list", "he2015"], "error: --list takes one experiment: `gradflow reproduce --list he2015` lists it, "
                                  "`gradflow reproduce --list` lists them all"),
    (["he2015", "he2016", "--quick"], "error: gradflow reproduce runs one experiment, or all of them: `gradflow "
     "reproduce he2015 --quick`, then `gradflow reproduce he2016 --quick`; or `gradflow reproduce all --quick`"),
    # the rest of the command line goes into every command (they ran into the default folder, the default seeds)
    (["he2015", "he2016", "--quick", "results=/tmp/x", "seed=0,1"],
     "error: gradflow reproduce runs one experiment, or all of them: `gradflow reproduce he2015 --quick "
     "results=/tmp/x seed=0,1`, then `gradflow reproduce he2016 --quick results=/tmp/x seed=0,1`; or `gradflow "
     "reproduce all --quick results=/tmp/x seed=0,1`"),
    # a misspelled first name, or two scales, is said as alone (the commands repeated both)
    (["he2051", "he2016"], "error: reproduce 'he2051' is not a known experiment (did you mean he2015?); choices: "
                           "backprop-vs-fd, glorot2010, he2015, he2016, hochreiter1991, pascanu2013, pennington2017, "
                           "schoenholz2017, sigmoid-textbook, skipinit2020, xiong2020, all"),
    (["he2015", "he2016", "--quick", "--scale", "paper"], "error: --quick and --scale paper ask for two scales; give one"),
    # (all twice: an empty list of commands, and beside --list an IndexError)
    (["all", "all"], "error: gradflow reproduce runs one experiment, or all of them: `gradflow reproduce all`"),
    (["--list", "all", "all"], "error: --list takes one experiment, or none: `gradflow reproduce --list` lists "
                               "them all"),
    (["he2015", "he2015", "--quick"], "error: he2015 is given twice; give it once: `gradflow reproduce he2015 --quick`"),
    (["he2015", "all"], "error: gradflow reproduce runs one experiment, or all of them: `gradflow reproduce he2015`; "
                        "or `gradflow reproduce all`"),
])
def test_reproduce_takes_one_experiment_and_says_how_to_run_two(cli, args, said):
    out = cli("reproduce", *args)
    assert out.exit_code == 1 and out.stdout == "" and out.stderr.strip() == said, out.output


def test_reproduce_all_says_on_a_terminal_that_it_is_planning_and_clears_it():
    # planning every experiment takes seconds before the first header (or the error): a spinner says so on a
    # terminal, and is gone before the error's line (a pipe sees neither: the tests beside this one)
    text = on_a_terminal("reproduce", "all", "--quick", "optim.gamma=0.5", code=1)
    assert "planning the arms of every experiment" in text
    at = text.index("error:")
    before = re.split(r"\r\n|\n|\x1b\[2K", text[:at])[-1]
    assert "planning" not in re.sub(r"\x1b\[[0-9;]*m", "", before), repr(text[-400:])
    assert "no run of any experiment takes optim.gamma" in text


@pytest.mark.parametrize("args, said", [
    # data.T is taken by some experiments' recurrent runs, not glorot2010's: it applies to those that take it
    # (it ran backprop-vs-fd whole, then stopped at glorot2010 with "no run of glorot2010 takes data.T"), and
    # he2016's CIFAR-10 files are missing: every experiment is planned before one runs, so nothing ran
    (["--scale", "paper", "data.T=5", "data.root={tmp}"], "has no CIFAR-10 files"),
    (["--quick", "optim.gamma=0.5"], "no run of any experiment takes optim.gamma: optim.schedule=step reads it"),
])
def test_reproduce_all_plans_every_experiment_before_any_runs(cli, results, tmp_path, args, said):
    out = cli("reproduce", "all", *(a.format(tmp=tmp_path) for a in args), f"results={results}")
    assert out.exit_code == 1 and out.stdout == "", out.output
    assert out.stderr.startswith("error:") and said in out.stderr and len(out.stderr.strip().splitlines()) == 1, \
        out.stderr
    assert not list(results.glob("**/run.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_sweeps_device_is_checked_where_its_jobs_run(cli, results, tmp_path, monkeypatch):
    # a sweep on CUDA planned here, with no GPU: refused in one line where the jobs run here; a SLURM sweep's
    # device=cuda is the compute nodes' (planning it on a GPU-less login node was refused)
    from gradflow import sweep as sweep_mod

    out = cli("sweep", *SMALL, "model.depth=2,3", "device=cuda", f"results={results}")
    assert out.exit_code == 1 and out.stderr.strip() == ("error: device='cuda' but CUDA is not available on this "
                                                         "machine; use device=auto or device=cpu"), out.output
    assert not results.exists()
    out = cli("sweep", *SMALL, "model.depth=2,3", "device=gpu", f"results={results}")
    assert "device='gpu' is not allowed; choices: auto, cpu, cuda, cuda:N, mps" in out.stderr
    bin_dir = tmp_path / "bin"  # a login node's sbatch and srun (planning never calls them)
    _commands(bin_dir, sbatch="exit 1", srun="exit 1")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    plan = sweep_mod.plan([*SMALL, "model.depth=2,3", "device=cuda", "hydra/launcher=slurm", f"results={results}"],
                          "on-the-cluster")
    assert [j.name for j in plan.jobs] == ["model.depth=2", "model.depth=3"] and plan.launcher == "slurm"
    with pytest.raises(GradflowError, match="device='gpu' is not allowed"):
        sweep_mod.plan([*SMALL, "device=gpu", "hydra/launcher=slurm", f"results={results}"], "typo")


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="a SLURM cluster is here")
def test_slurm_off_a_cluster_is_one_line_before_anything_runs(cli, results):
    # submitit raised "Could not detect srun" in a traceback, after the sweep had written its spec
    out = cli("sweep", *SMALL, "model.depth=2,3", "hydra/launcher=slurm", f"results={results}")
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert out.stderr.strip() == ("error: hydra/launcher=slurm submits to SLURM, and this machine has no sbatch; run "
                                  "it on the cluster's login node, or use hydra/launcher=joblib here")
    assert not results.exists()


def _commands(folder: Path, **scripts: str) -> None:
    """Programs on PATH that stand in for a cluster's (a shell script each)."""
    folder.mkdir(exist_ok=True)
    for name, script in scripts.items():
        (folder / name).write_text(f"#!/bin/sh\n{script}\n")
        (folder / name).chmod(0o755)


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="a SLURM cluster is here")
def test_slurm_refusing_the_jobs_is_one_line_in_sbatchs_words(cli, results, tmp_path, monkeypatch):
    """A partition that does not exist: sbatch's own error in one line, not submitit's 37-line traceback
    through Hydra's; and a login node with sbatch but no srun is refused before anything is written."""
    bin_dir = tmp_path / "bin"
    _commands(bin_dir, sbatch="echo 'sbatch: error: Batch job submission failed: Invalid partition name specified' >&2"
                              "\nexit 1")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = cli("sweep", *SMALL, "model.depth=2,3", "hydra/launcher=slurm", f"results={results}")
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert out.stderr.strip().splitlines()[-1] == (
        "error: hydra/launcher=slurm submits to SLURM, and this machine has no srun; run it on the cluster's login "
        "node, or use hydra/launcher=joblib here")
    assert not results.exists()

    _commands(bin_dir, srun="exit 0")
    out = cli("sweep", *SMALL, "model.depth=2,3", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
              f"results={results}", "--name", "on-slurm")
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output
    assert out.stderr.strip().splitlines()[-1] == (
        "error: hydra/launcher=slurm: SLURM took no job of the sweep: sbatch: error: Batch job submission failed: "
        "Invalid partition name specified; check hydra.launcher.partition and the other settings "
        f"({CONF_DIR / 'hydra' / 'launcher' / 'slurm.yaml'})")
    assert not list((results / "on-slurm").rglob(store.RUN_FILE))  # (nothing ran: the spec says what is to run)
    assert (results / "on-slurm" / store.SWEEP_FILE).is_file()


def test_only_a_submitit_launchers_error_is_read_as_slurms():
    # any error raised from a CalledProcessError (a task's own subprocess) was "SLURM took no job of the sweep",
    # under the basic and joblib launchers too
    from submitit.core.utils import FailedJobError

    def raised(e, cause):
        try:
            raise e from cause
        except Exception as caught:
            return caught

    cause = subprocess.CalledProcessError(1, ["sbatch", "x.sh"])
    for launcher in ("basic", "joblib", "submitit_local"):
        plan = sweep.Plan(root=Path("results/s"), overrides=[], swept=[], launcher=launcher, jobs=[])
        assert sweep.launcher_error(plan, raised(RuntimeError("a task's error"), cause)) is None
        if launcher != "submitit_local":  # (whose own jobs fail as submitit's: "a job ended without its result")
            assert sweep.launcher_error(plan, raised(FailedJobError("sbatch: error: no"), cause)) is None
    slurm = sweep.Plan(root=Path("results/s"), overrides=[], swept=[], launcher="slurm", jobs=[])
    assert "SLURM took no job of the sweep: sbatch: error: no;" in str(
        sweep.launcher_error(slurm, raised(FailedJobError("sbatch: error: no"), cause)))
    assert sweep.launcher_error(slurm, raised(RuntimeError("a task's error"), cause)) is None


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="a SLURM cluster is here")
def test_a_slurm_job_killed_at_its_time_limit_is_one_line_naming_the_limit_and_the_logs(cli, results, tmp_path,
                                                                                        monkeypatch):
    """SLURM took the jobs, and one ended without its result (killed at its time limit: submitit waits ~15 s
    for the result, then raised in a traceback): which job, its state, the setting that limits it, its logs."""
    bin_dir = tmp_path / "bin"
    _commands(bin_dir, sbatch="echo 'Submitted batch job 4242'", srun="exit 0",
              sacct="echo 'JobID|State|NodeList'; echo '4242_0|TIMEOUT|node1'; echo '4242_1|TIMEOUT|node1'")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    from submitit.core.core import Job

    monkeypatch.setattr(Job, "_results_timeout_s", 0)  # (submitit's wait for a result that never comes: 15 s)
    out = cli("sweep", *SMALL, "model.depth=2,3", "hydra/launcher=slurm", f"results={results}", "--name", "cut")
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: hydra/launcher=slurm: a job ended without its result (job 4242_0, state TIMEOUT: past its time "
        f"limit, hydra.launcher.timeout_min; its logs: {results / 'cut' / '.submitit' / '4242_0'}); `gradflow ls "
        f"{results / 'cut'}` shows which runs finished, and the same command again runs the rest")
    assert (results / "cut" / ".submitit" / "4242_0").is_dir()


def test_an_unknown_launcher_lists_every_launcher():
    """(A bug this catches: the choices in the message leave a launcher out; the CLI test checks only "choices: basic".)"""
    with pytest.raises(GradflowError) as e:
        sweep.check_launcher("ray")
    listed = str(e.value).rsplit("choices: ", 1)[1].split(", ")
    assert listed == list(sweep.LAUNCHER_PLUGINS)


@pytest.mark.parametrize("launcher, setting, ok", [
    ("submitit_local", "hydra.launcher.timeout_min=0", False),  # (the CLI test has -1 only)
    ("submitit_local", "hydra.launcher.timeout_min=1", True),
    ("joblib", "hydra.launcher.n_jobs=-1", True),  # one worker per CPU core, as the message says
    ("joblib", f"hydra.launcher.n_jobs=-{joblib.cpu_count()}", True),  # one worker
    ("joblib", f"hydra.launcher.n_jobs=-{joblib.cpu_count() + 1}", False),  # none (joblib ran 1 without a word)
    ("joblib", "hydra.launcher.n_jobs=0", False),
    # the plugins' defaults back (null), a value resolved later, SLURM's mem 0 (all of the node's), inf
    ("submitit_local", "hydra.launcher.mem_gb=null", True),
    ("submitit_local", "hydra.launcher.cpus_per_task=${oc.env:NCPU,4}", True),
    ("submitit_local", "hydra.launcher.mem_gb=0", True),
    ("joblib", "hydra.launcher.timeout=inf", True),
    ("joblib", "hydra.launcher.timeout=abc", False),
    ("submitit_local", "hydra.launcher.cpus_per_task=0", False),
    ("submitit_local", "hydra.launcher.cpus_per_task=1,2", True),
])
def test_launcher_settings_at_their_limits(launcher, setting, ok):
    """timeout_min is 1 or more; n_jobs=-1 (one per core) is joblib's own and allowed. (A bug this catches: timeout_min
    checked as >= 0; n_jobs's negative values refused.)"""
    if ok:
        sweep.check_launcher(launcher, parsed_overrides([setting]))
    else:
        with pytest.raises(GradflowError, match="is not allowed"):
            sweep.check_launcher(launcher, parsed_overrides([setting]))


def test_an_over_long_word_in_an_error_is_shortened_and_an_existing_path_kept_whole(cli, tmp_path):
    """A word of the error line over 100 characters (a pasted path that does not exist) is shortened around
    an ellipsis, with its length; one of 100 stays whole; the path of an existing folder, however long, stays
    whole: it is what the user must find."""
    def path(n: int) -> str:
        p = str(tmp_path / ("p" * (n - len(str(tmp_path)) - 1)))
        assert len(p) == n, (len(p), n)
        return p

    for n in (100, 101):
        out = cli("ls", path(n))
        err = out.stderr.strip()
        assert out.exit_code == 1 and err.endswith("does not exist") and len(err.splitlines()) == 1, err
        if n <= 100:
            assert f"error: {path(n)} does not exist" == err, err
        else:
            assert path(n) not in err and f"error: {path(n)[:49]}…{path(n)[-49:]} ({n} characters) does not exist" \
                == err, err
    existing = tmp_path / ("e" * 150)
    existing.mkdir()
    out = cli("ls", existing)
    assert out.exit_code == 1 and out.stderr.startswith(f"error: {existing} holds no runs"), out.stderr


def test_a_shortened_value_counts_its_own_characters_not_its_quotes(cli):
    """name= of 101 characters was said to be "(103 characters)": the count took in the quotes around it."""
    out = cli("run", "name=" + "a" * 101, "train.steps=1")
    err = out.stderr.strip()
    assert out.exit_code == 1 and err.startswith(f"error: name='{'a' * 28}…{'a' * 28}' (101 characters) must be"), err


def test_a_study_inside_another_is_refused_and_a_sweeps_name_error_names_its_results_folder(cli, tmp_path):
    # name=grid/inner beside the sweep grid's runs: ls grid listed it as a fifth row, plot merged it into the
    # sweep's figure; a sweep's bad name said "inside results/" for its own results= folder
    results = tmp_path / "r"
    small = [*SMALL, f"results={results}"]
    assert cli("sweep", *small, "--name", "grid", "model.depth=2,3").exit_code == 0
    assert cli("run", *small, "name=single").exit_code == 0
    before = _files(results)
    for args, outer in ((["run", "name=grid/inner"], f"the sweep {results / 'grid'}"),
                        (["sweep", "--name", "grid/sub", "model.depth=2,3"], f"the sweep {results / 'grid'}"),
                        (["run", "name=single/inner"], f"{results / 'single'}, a folder of runs"),
                        # (the same layout by results=, and a study inside a run's own folder)
                        (["run", f"results={results / 'single'}", "name=inner"], f"{results / 'single'}, a folder "
                                                                                  "of runs"),
                        (["run", f"results='{results / 'grid' / 'model.depth=2'}'", "name=x"],
                         f"the run {results / 'grid' / 'model.depth=2'}")):
        given = next((a for a in args if a.startswith("results=")), None)
        out = cli(args[0], *SMALL, *args[1:], *([] if given else [f"results={results}"]))
        under = (given or f"results={results}").replace("'", "")
        name = next(a for a in args if a.startswith(("name=", "grid/"))).removeprefix("name=")
        assert out.exit_code == 1 and out.stderr.strip() == (
            f"error: name={name} under {under} is inside {outer}, which would list, plot and clean its runs as its "
            "own; give a name (or results=) outside it"), out.output
    assert _files(results) == before
    assert cli("run", *small, "name=group/inner").exit_code == 0  # (a folder of studies is none)
    out = cli("sweep", *small, "--name", "a b", "model.depth=2,3")
    assert out.exit_code == 1 and f"name='a b' must be a relative folder name inside {results}/ " in out.stderr


def test_clean_refuses_a_link_before_it_lists_anything(cli, tmp_path, study):
    # it listed "N runs to remove" and then refused the link (the lock's check)
    link = tmp_path / "link"
    link.symlink_to(study)
    out = cli("clean", str(link), "--stale", "-y")
    assert out.exit_code == 1 and out.stdout == "" and out.stderr.strip() == (
        f"error: {link} is a symbolic link (to {study}); gradflow removes only from real folders: give the folder "
        "itself"), out.output


def test_help_given_twice_is_the_help():
    exe = Path(sys.executable).parent / "gradflow"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "gradflow"]
    out = subprocess.run([*cmd, "ls", "--help", "--help"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "80"})
    assert out.returncode == 0 and "Usage:" in out.stdout and out.stderr == "", out.stderr


def test_a_long_path_that_exists_stays_whole_in_a_message_also_as_a_keys_value(tmp_path):
    # results=PATH of 101 characters was cut around an ellipsis (the folder the user must find), as a pasted
    # value is; a path given bare already stayed whole
    from gradflow.cli.console import _short_words

    folder = tmp_path / ("d" * max(1, 110 - len(str(tmp_path))))
    folder.mkdir()
    for word in (str(folder), f"results={folder}"):
        assert _short_words(f"name=x under {word} is inside it") == f"name=x under {word} is inside it"
    gone = f"results={folder}-gone"
    assert "…" in _short_words(f"name=x under {gone} is inside it")

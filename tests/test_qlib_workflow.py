"""Qlib's own workflow on mined factors: the example workflow nbs/experiments/qlib_factors_lgb.yaml trains Qlib's
LGBModel through alphanb's FactorsLoader on the demo market, in this process and through the `qrun` command.

The workflow keeps Qlib's records in an SQLite store in the working folder (mlflow's file store, pyqlib's default, can be
read half written while Qlib logs metrics from a background thread) and Qlib puts its experiment lock there too, so both
runs happen in a scratch folder.
"""
import os, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

WORKFLOW = ROOT/'nbs'/'experiments'/'qlib_factors_lgb.yaml'
ROUNDS = 30   # trees at most: enough to learn something, quick on two cores


def workflow_config(monkeypatch) -> dict:
    "The example workflow as `qrun` reads it (Qlib's own template rendering), with the project's absolute paths."
    from qlib.cli.run import render_template
    monkeypatch.setenv('ALPHANB_ROOT', str(ROOT))
    config = yaml.safe_load(render_template(str(WORKFLOW)))
    monkeypatch.delenv('ALPHANB_ROOT')
    config['task']['model']['kwargs'].update(num_boost_round=ROUNDS, num_threads=1)
    return config


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    "A scratch working folder with one thread per library."
    for k, v in {'NUMBA_NUM_THREADS': '1', 'OMP_NUM_THREADS': '1'}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_lgb_on_factors(demo_data, scratch, monkeypatch):
    "LGBModel fits on the factors of data/demo/factors.json and predicts every row of the test segment."
    import qlib
    from qlib.data.dataset.handler import DataHandlerLP
    from qlib.utils import init_instance_by_config
    from qlib.workflow import R
    from alphanb.qlib import FactorsLoader

    config = workflow_config(monkeypatch)
    task = config['task']
    qlib.init(**config['qlib_init'])
    model = init_instance_by_config(task['model'])
    dataset = init_instance_by_config(task['dataset'])
    assert isinstance(dataset.handler.data_loader, FactorsLoader)
    with R.start(experiment_name='test', uri=f'sqlite:///{scratch}/mlruns.db'):   # LGBModel logs its learning curve to Qlib's recorder
        model.fit(dataset)
    pred = model.predict(dataset)

    test_index = dataset.prepare('test', col_set='feature', data_key=DataHandlerLP.DK_I).index
    assert pred.index.equals(test_index)
    start, end = (pd.Timestamp(d) for d in task['dataset']['kwargs']['segments']['test'])
    days = test_index.get_level_values('datetime')
    assert days.min() >= start and days.max() <= end
    assert np.isfinite(pred.to_numpy()).all()
    assert 0 < model.model.num_trees() <= ROUNDS

    label = dataset.prepare('test', col_set='label', data_key=DataHandlerLP.DK_R)['LABEL0']
    both = pd.concat([pred.rename('pred'), label], axis=1).dropna()
    rank_ic = both.groupby(level='datetime').apply(lambda d: d['pred'].corr(d['LABEL0'], method='spearman'))
    labelled = label.dropna().index.get_level_values('datetime').unique()
    assert rank_ic.index.equals(labelled) and np.isfinite(rank_ic.to_numpy()).all()
    print(f"LGBModel on the demo's factors: {model.model.num_trees()} trees, test rank IC {rank_ic.mean():.4f} "
          f"(ICIR {rank_ic.mean() / rank_ic.std():.2f}) over {len(rank_ic)} days")


@pytest.mark.long(seconds=13)
def test_qrun(demo_data, scratch, monkeypatch):
    "The `qrun` command runs the example workflow end to end: signal, its IC analysis and the backtest are recorded."
    qrun = Path(sys.executable).parent/'qrun'
    if not qrun.exists(): pytest.skip(f'no qrun command beside {sys.executable}: pyqlib is installed without its scripts')
    (scratch/'workflow.yaml').write_text(yaml.safe_dump(workflow_config(monkeypatch), sort_keys=False))
    run = subprocess.run([str(qrun), 'workflow.yaml'], cwd=scratch, capture_output=True, text=True, timeout=300)
    out = run.stdout + run.stderr
    if run.returncode and any(s in out for s in ['Max retries exceeded', 'Temporary failure in name resolution', 'Network is unreachable']):
        pytest.skip('qrun needs the network here: ' + out.strip().splitlines()[-1])
    assert run.returncode == 0, out[-3000:]
    artifacts = {p.name for p in (scratch/'mlruns').rglob('*') if p.is_file()}
    assert {'pred.pkl', 'label.pkl', 'ic.pkl', 'ric.pkl', 'report_normal_1day.pkl'} <= artifacts, sorted(artifacts)
    [pred_file] = (scratch/'mlruns').rglob('pred.pkl')
    pred = pd.read_pickle(pred_file)
    assert len(pred) and np.isfinite(pred.to_numpy()).all()

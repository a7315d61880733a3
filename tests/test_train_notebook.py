"nbs/train.ipynb run through papermill with tiny parameters, in a kernel of this interpreter."
import json, sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'
WIDGET_STATE = 'application/vnd.jupyter.widget-state+json'


def kernel_of_this_python(tmp_path:Path)->tuple[str, Path]:
    "A kernelspec that starts `sys.executable` (this venv), in a directory for JUPYTER_PATH; nothing is installed."
    name = 'alphanb-test'
    d = tmp_path/'jupyter'/'kernels'/name
    d.mkdir(parents=True)
    (d/'kernel.json').write_text(json.dumps({'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
                                             'display_name': 'alphanb test', 'language': 'python'}))
    return name, tmp_path/'jupyter'


def outputs(nb, kind:str)->list:
    return [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if kind in o.get('data', {})]


def test_train_notebook_runs_under_papermill(tmp_path, monkeypatch, demo_data):
    pm = pytest.importorskip('papermill')
    kernel, jpath = kernel_of_this_python(tmp_path)
    monkeypatch.setenv('JUPYTER_PATH', str(jpath))
    out = tmp_path/'run'
    params = dict(universe='csi500', steps=2, batch_size=16, out=str(out), seed=1, backtest_topk=5, pool_size=5,
                  train_start='2018-06-01', train_end='2019-03-29', valid_start='2019-04-01',
                  settings={'minibatch_size': 8, 'ppo_epochs': 1, 'hidden': 16, 'layers': 1, 'heads': 2, 'max_len': 8,
                            'checkpoint_every': 0},
                  progress=True)
    executed = tmp_path/'train.ipynb'
    pm.execute_notebook(str(ROOT/'nbs'/'train.ipynb'), str(executed), parameters=params, kernel_name=kernel,
                        cwd=str(ROOT), progress_bar=False, execution_timeout=600)
    nb = nbformat.read(executed, as_version=4)

    # the run used the parameters and wrote its files
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['universe'] == 'csi500' and cfg['steps'] == 2 and cfg['hidden'] == 16
    factors = json.loads((out/'factors.json').read_text())
    assert isinstance(factors, list) and factors, 'the pool should hold at least one factor'
    for e in factors:
        assert {'factor_name', 'expression', 'qlib_expression', 'weight', 'interpretation', 'performance'} <= set(e)
        assert e['interpretation'].startswith('Core logic:')
        assert 'valid' in e['performance']
    for f in ['model.pt', 'model.npz', 'log.csv', 'backtest/nav.csv', 'backtest/metrics.json']: assert (out/f).exists(), f

    # figures, the progress bar and the inspector are in the executed notebook, with the widget state
    assert len(outputs(nb, 'image/png')) >= 2                   # training curves and the backtest NAV
    views = outputs(nb, WIDGET_VIEW)
    assert any('FactorInspector' in o['data'].get('text/plain', '') for o in views)
    state = nb.metadata['widgets'][WIDGET_STATE]['state']
    ids = {o['data'][WIDGET_VIEW]['model_id'] for o in views}
    assert ids <= set(state)                                    # every displayed widget has its saved state
    assert any(s['model_name'] == 'DropdownModel' for s in state.values())
    assert 'papermill nbs/report.ipynb' in json.dumps(nb.cells[-1].get('outputs', []))

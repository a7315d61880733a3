"nbs/train.ipynb run through papermill with tiny parameters, in a kernel of this interpreter; its settings against `alphanb train`'s."
import argparse, json, os, shlex, shutil, subprocess, sys
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest

from alphanb.config import TrainConfig, add_config_args, config_dict, config_from_args, config_paths, stored_config

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT/'nbs'/'train.ipynb'
WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'
WIDGET_STATE = 'application/vnd.jupyter.widget-state+json'

# A tiny run: the config file holds most settings; the parameters override some of them, and `settings` others.
CONFIG_FILE = {'ppo/steps': 2, 'ppo/batch_size': 16, 'data/topk': 7, 'data/universe': 'csi500', 'run/seed': 5, 'policy/hidden': 32,
               'ppo/minibatch_size': 8, 'ppo/epochs': 1, 'policy/layers': 1, 'policy/heads': 2, 'policy/max_len': 8,
               'run/checkpoint_every': 0}
PARAMS = dict(seed=1, pool_size=5, train_start='2018-06-01', train_end='2019-03-29', valid_start='2019-04-01',
              settings={'policy/hidden': 16}, backtest_topk=5, progress=True)
CLI_ARGS = ['--seed', '1', '--set', 'pool/size', '5', '--train', '2018-06-01:2019-03-29', '--valid', '2019-04-01:',
            '--set', 'policy/hidden', '16']   # the same settings as PARAMS, as `alphanb train` options


def kernel_of_this_python(d:Path)->tuple[str, Path]:
    "A kernelspec that starts `sys.executable` (this venv), in a directory for JUPYTER_PATH; nothing is installed."
    name = 'alphanb-test'
    k = d/'jupyter'/'kernels'/name
    k.mkdir(parents=True)
    (k/'kernel.json').write_text(json.dumps({'argv': [sys.executable, '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
                                             'display_name': 'alphanb test', 'language': 'python'}))
    return name, d/'jupyter'


@pytest.fixture(scope='module')
def run(tmp_path_factory, demo_data):
    "The notebook executed by papermill with `config_file` and PARAMS: (executed notebook, output dir, config file, work dir)."
    d = tmp_path_factory.mktemp('train_nb')
    kernel, jpath = kernel_of_this_python(d)
    cfg_file = d/'cfg.json'
    cfg_file.write_text(json.dumps(CONFIG_FILE))
    out, executed = d/'run', d/'executed'/'train.ipynb'
    executed.parent.mkdir()
    params = dict(PARAMS, config_file=str(cfg_file), out=str(out), PAPERMILL_OUTPUT_PATH=str(executed))  # as --inject-output-path
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('JUPYTER_PATH', str(jpath))
        pm.execute_notebook(str(NB), str(executed), parameters=params, kernel_name=kernel, cwd=str(ROOT),
                            progress_bar=False, execution_timeout=600)
    return nbformat.read(executed, as_version=4), out, cfg_file, d


def cell_with(nb, text:str):
    "The one code cell whose source contains `text`."
    cells = [c for c in nb.cells if c.cell_type == 'code' and text in c.source]
    assert len(cells) == 1, f'{len(cells)} code cells of train.ipynb contain {text!r}'
    return cells[0]


def shown(cell, kind:str)->list:
    return [o for o in cell.get('outputs', []) if kind in o.get('data', {})]


def test_train_notebook_runs_under_papermill(run):
    nb, out, _, d = run
    factors = json.loads((out/'factors.json').read_text())
    assert isinstance(factors, list) and factors, 'the pool should hold at least one factor'
    for e in factors:
        assert {'factor_name', 'expression', 'qlib_expression', 'weight', 'interpretation', 'performance'} <= set(e)
        assert e['interpretation'].startswith('Core logic:')
        assert 'valid' in e['performance']
    for f in ['model.pt', 'model.npz', 'log.csv', 'backtest/nav.csv', 'backtest/metrics.json']: assert (out/f).exists(), f

    # the figures are outputs of the cells that draw them: the 2x2 training curves, the NAV of the backtest
    curves, nav = shown(cell_with(nb, "log.plot(x='step'"), 'image/png'), shown(cell_with(nb, 'backtest(panel'), 'image/png')
    assert len(curves) == 1 and 'with 4 Axes' in curves[0]['data']['text/plain']
    assert len(nav) == 1 and 'with 1 Axes' in nav[0]['data']['text/plain']

    # the pool table shows every factor with its interpretation
    table = ''.join(o['data']['text/html'] for o in shown(cell_with(nb, 'pool = pd.DataFrame'), 'text/html'))
    assert 'interpretation' in table and all(e['factor_name'] in table for e in factors)
    assert all(e['interpretation'].splitlines()[0] in table for e in factors)

    # widgets are saved with their state: the finished progress bar of training and the inspector
    state = nb.metadata['widgets'][WIDGET_STATE]['state']
    views = [o['data'][WIDGET_VIEW]['model_id'] for c in nb.cells if c.cell_type == 'code' for o in shown(c, WIDGET_VIEW)]
    assert set(views) <= set(state)                              # every displayed widget has its saved state
    parts = lambda cell: [state[m.removeprefix('IPY_MODEL_')]['state'] for o in shown(cell, WIDGET_VIEW)
                          for m in state[o['data'][WIDGET_VIEW]['model_id']]['state'].get('children', [])]
    steps = CONFIG_FILE['ppo/steps']
    assert any(b.get('_model_name') == 'FloatProgressModel' and b['value'] == b['max'] == steps and b['bar_style'] == 'success'
               for b in parts(cell_with(nb, 'train(cfg'))), 'the training cell should show the finished progress bar'
    assert any('FactorInspector' in o['data'].get('text/plain', '') for o in shown(cell_with(nb, 'inspect_factors('), WIDGET_VIEW))
    assert any(s['model_name'] == 'DropdownModel' for s in state.values())

    # the last cell links the report notebook relative to the executed notebook and gives a command that runs from anywhere
    md = ''.join(o['data']['text/markdown'] for o in shown(nb.cells[-1], 'text/markdown'))
    link = os.path.relpath(ROOT/'nbs'/'report.ipynb', d/'executed')
    assert f'[report.ipynb]({Path(link).as_posix()})' in md
    cmd = shlex.split(md.split('```bash\n')[1].split('\n```')[0])
    assert cmd[:4] == ['cd', str(ROOT), '&&', 'papermill'] and set(cmd[6::3]) == {'-p'}
    here = Path(cmd[1])
    assert (here/cmd[4]).resolve() == (ROOT/'nbs'/'report.ipynb').resolve()
    p = dict(zip(cmd[7::3], cmd[8::3]))
    assert set(p) <= set(pm.inspect_notebook(str(ROOT/'nbs'/'report.ipynb'))), 'parameters report.ipynb does not have'
    assert (here/p['factors']).resolve() == (out/'factors.json').resolve() and p['universe'] == CONFIG_FILE['data/universe']
    nav_days = pd.read_csv(out/'backtest'/'nav.csv', index_col=0, parse_dates=True).index
    assert (p['start'], p['end']) == (f'{nav_days[0]:%Y-%m-%d}', f'{nav_days[-1]:%Y-%m-%d}')   # the valid split of the run
    assert p['topk'] == str(PARAMS['backtest_topk'])


def test_notebook_settings_are_the_config_file_then_parameters_then_settings(run):
    _, out, _, _ = run
    cfg = config_paths(stored_config(json.loads((out/'config.json').read_text())))
    for k in ['ppo/steps', 'ppo/batch_size', 'data/topk', 'data/universe', 'ppo/epochs']:   # from the config file
        assert cfg[k] == CONFIG_FILE[k], f'{k}: the config file says {CONFIG_FILE[k]!r}, the run used {cfg[k]!r}'
    assert cfg['run/seed'] == PARAMS['seed'] and cfg['pool/size'] == PARAMS['pool_size']   # parameters over the file
    assert cfg['policy/hidden'] == PARAMS['settings']['policy/hidden']                     # settings over the file
    assert cfg['ppo/lr'] == TrainConfig().ppo.lr and cfg['reward/weights'] == TrainConfig().reward.weights   # defaults


def test_notebook_and_cli_write_the_same_config(run):
    _, out, cfg_file, d = run
    cli_out = d/'cli'
    r = subprocess.run([sys.executable, '-m', 'alphanb', 'train', '--config', str(cfg_file), '--out', str(cli_out),
                        '--no-progress', *CLI_ARGS], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    nb_cfg, cli_cfg = json.loads((out/'config.json').read_text()), json.loads((cli_out/'config.json').read_text())
    assert (nb_cfg['run'].pop('out'), cli_cfg['run'].pop('out')) == (str(out), str(cli_out))
    assert nb_cfg == cli_cfg


def notebook_config(**params)->dict:
    "The settings the notebook's first two code cells make from `params` (injected after the parameters cell, as papermill does)."
    nb = nbformat.read(NB, as_version=4)
    code = [c for c in nb.cells if c.cell_type == 'code']
    assert 'parameters' in code[0].metadata.get('tags', []), 'the first code cell of train.ipynb should be tagged parameters'
    ns = {}
    exec(code[0].source, ns)
    ns.update(params)
    exec(code[1].source, ns)
    return config_dict(ns['cfg'])


def test_default_parameters_make_the_cli_default_run(tmp_path):
    p = argparse.ArgumentParser(); add_config_args(p)
    assert notebook_config() == config_dict(config_from_args(p.parse_args([])))
    f = tmp_path/'cfg.json'
    f.write_text(json.dumps(CONFIG_FILE))
    assert notebook_config(config_file=str(f)) == config_dict(config_from_args(p.parse_args(['--config', str(f)])))


WIDGET_JS = {'@jupyter-widgets/html-manager': '1.0.15', 'requirejs': '2.3.8'}   # what nbconvert's HTML loads from CDNs

def widget_js(d:Path)->dict:
    "The scripts an exported notebook loads from CDNs (this machine's network is closed), from the npm registry."
    out = {}
    for pkg, ver in WIDGET_JS.items():
        r = subprocess.run(['npm', 'pack', f'{pkg}@{ver}', '--silent'], cwd=d, capture_output=True, text=True)
        assert r.returncode == 0, f'npm pack {pkg}@{ver} failed: {r.stderr[-2000:]}'
        tgz = d/r.stdout.strip().splitlines()[-1]
        dest = d/pkg.replace('/', '_')
        dest.mkdir(); subprocess.run(['tar', 'xzf', tgz, '-C', dest], check=True)
        out[pkg] = dest/'package'
    return out

@pytest.mark.skipif(shutil.which('npm') is None, reason='no npm to fetch the widget scripts an exported notebook loads')
def test_exported_html_shows_the_saved_widgets_in_chromium(run, tmp_path):
    "nbconvert's HTML of the executed notebook, opened in Chromium: the inspector renders from its saved widget state."
    from test_browser import CHROMIUM, FLAGS
    if CHROMIUM is None: pytest.skip('no Chromium: `apt-get install chromium`')
    from nbconvert import HTMLExporter
    from playwright.sync_api import sync_playwright, expect
    nb, *_ = run
    html, _ = HTMLExporter().from_notebook_node(nb)
    page_file = tmp_path/'train.html'
    page_file.write_text(html)
    js = widget_js(tmp_path)
    def serve(route):                     # the CDN scripts from the npm packages; nothing else leaves the machine
        u = route.request.url
        if u.startswith('file://'): return route.continue_()
        if 'require' in u and u.split('?')[0].endswith('.js') and 'cdnjs' in u:
            return route.fulfill(path=js['requirejs']/'require.js', content_type='application/javascript')
        if '@jupyter-widgets/html-manager' in u:
            return route.fulfill(path=js['@jupyter-widgets/html-manager']/'dist'/u.split('/dist/')[1].split('?')[0])
        return route.abort()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={'width': 1300, 'height': 1000})
        page.route('**/*', serve)
        page.goto(page_file.as_uri())
        formula = page.locator('.widget-text').filter(has_text='formula').locator('input')
        expect(formula).to_be_visible(timeout=60_000)
        entries = json.loads((run[1]/'factors.json').read_text())
        assert formula.input_value() == entries[0]['expression']            # the inspector as it was saved
        expect(page.locator('.widget-image')).to_have_count(3)
        page.wait_for_function("() => [...document.querySelectorAll('.widget-image')].every(i => i.complete && i.naturalWidth > 0)")
        expect(page.locator('.widget-html-content table')).to_contain_text('RankIC')
        expect(page.locator('.widget-hprogress').first).to_be_visible()       # training's finished progress bar
        formula.scroll_into_view_if_needed(); page.screenshot(path=tmp_path/'train_html.png')
        browser.close()

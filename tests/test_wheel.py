"""The package as a user gets it: a wheel built from the tree, installed without the dev extras into a new venv,
imports, and `alphanb train` in an empty folder trains on the demo market the wheel carries."""
import json, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ['alphanb', 'data/demo', 'setup.py', 'settings.ini', 'pyproject.toml', 'README.md']
DEV_ONLY = ['nbdev', 'execnb', 'pytest', 'hypothesis']

def run(cmd, **kw)->subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited with {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r

@pytest.mark.long(seconds=110)
def test_wheel_installs_and_trains_in_a_clean_venv(tmp_path):
    src = tmp_path/'src'                                  # a copy, so that the build leaves nothing in the tree
    for s in SOURCES:
        a, b = ROOT/s, src/s
        b.parent.mkdir(parents=True, exist_ok=True)
        if a.is_dir(): shutil.copytree(a, b, ignore=shutil.ignore_patterns('__pycache__'))
        else: shutil.copyfile(a, b)
    run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', tmp_path/'dist', src])
    wheel, = (tmp_path/'dist').glob('alphanb-*.whl')
    venv = tmp_path/'venv'
    run([sys.executable, '-m', 'venv', venv])
    py, cli = venv/'bin'/'python', venv/'bin'/'alphanb'
    # torch by its pin, as `make install` does (no CUDA build); --no-compile: the few modules the test imports compile when
    # imported instead of every module of every package at install (which took half of this test's time)
    run([py, '-m', 'pip', 'install', '-q', '--no-compile', 'torch==2.13.0'])
    run([py, '-m', 'pip', 'install', '-q', '--no-compile', wheel])
    found = run([py, '-c', f'import importlib.util as u; print([m for m in {DEV_ONLY!r} if u.find_spec(m)])']).stdout.strip()
    assert found == '[]', f'dev requirements in the clean venv: {found}'
    where = run([py, '-c', 'import alphanb, alphanb.train as t; print(alphanb.__file__); print(t.resolve_data("data/demo"))'],
                cwd=tmp_path).stdout.split()
    assert str(venv) in where[0] and Path(where[1]) == Path(where[0]).parent/'demo', where   # the installed package and its demo
    empty = tmp_path/'empty'; empty.mkdir()
    r = run([cli, 'train', '--steps', '2', '--out', 'run', '--no-progress', '--set', 'ppo/batch_size', '16', '--set', 'ppo/minibatch_size', '16'],
            cwd=empty)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res['steps'] == 2 and res['evaluations'] > 0, res
    factors = json.loads((empty/'run'/'factors.json').read_text())
    assert isinstance(factors, list) and all('expression' in f for f in factors)
    assert sorted(p.name for p in empty.iterdir()) == ['run']          # nothing written outside --out

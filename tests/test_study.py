"`alphanb study` end to end: the CLI on the demo market with tiny settings (last stdout line is JSON), resumed, and bad input."
import json, os, subprocess, sys, time

import pytest

ENV = {**os.environ, 'NUMBA_NUM_THREADS': '1', 'OMP_NUM_THREADS': '1'}
TINY = ['--universes', 'csi300', '--test-years', '2019', '--seeds', '0-1', '--steps', '2', '--jobs', '2', '--rounds', '20',
        '--set', 'ppo/batch_size', '16', '--set', 'ppo/minibatch_size', '16', '--set', 'pool/size', '6', '--no-progress']


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, '-m', 'alphanb', 'study', *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


@pytest.mark.long(seconds=45)
def test_cli_demo_end_to_end(demo_data, tmp_path):
    out, scratch = tmp_path/'study', tmp_path/'scratch'
    t = time.perf_counter()
    p = _cli('--data', demo_data, *TINY, '--out', out, '--scratch', scratch)
    seconds = time.perf_counter() - t
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert {'table', 'seed_spread', 'targets', 'folds', 'runs', 'trained', 'scored', 'reused', 'files'} <= set(r)
    assert {g['goal'] for g in r['targets']} >= {'ensemble RankIC - best single classic', 'ensemble IC'}
    assert (r['runs'], r['trained'], r['scored'], r['reused']) == (2, 2, 2, 0)
    table = {row['method']: row for row in r['table']}
    assert {'mined_pruned', 'mined_unpruned', 'alpha158_linear', 'alpha158_lightgbm', 'alpha158_mined_linear',
            'classic_combined', 'classic_chosen', 'classic_best_single', 'classic_best_after_the_fact', 'classic:size'} <= set(table)
    assert table['mined_pruned']['n'] == 2 and table['mined_pruned']['rank_ic_std'] is not None
    assert r['folds']['test2019']['select'][1] < r['folds']['test2019']['test'][0]
    for f in ['summary.json', 'summary.csv', 'rows.csv', 'test_rank_ic_csi300.png', 'csi300/test2019/baselines.json',
              'csi300/test2019/seed1/final_factors.json', 'csi300/test2019/seed1/result.json']:
        assert (out/f).exists(), f
    assert not list(out.rglob('*.pt')) and list(scratch.rglob('checkpoint.pt'))   # models stay out of OUT
    assert 'mined pool, pruned on the selection year' in p.stdout
    assert seconds < 120, f'the tiny study took {seconds:.0f}s'

    again = _cli('--data', demo_data, *TINY, '--out', out, '--scratch', scratch)   # resumed: nothing to do
    assert again.returncode == 0, again.stderr
    r2 = json.loads(again.stdout.strip().splitlines()[-1])
    assert (r2['trained'], r2['scored'], r2['reused']) == (0, 0, 2)
    assert r2['table'] == r['table']


def test_cli_bad_input_is_one_line(demo_data, tmp_path):
    p = _cli('--data', demo_data, '--universes', 'csi301', '--out', tmp_path/'o')
    assert p.returncode == 2 and p.stdout == ''
    assert p.stderr.strip().splitlines() == [
        f"alphanb study: error: unknown universe 'csi301' (did you mean 'csi300'?): {demo_data.resolve()} has all, csi300, csi500; "
        "pass some of them to --universes"]
    p = _cli('--data', demo_data, '--universes', 'csi300', '--test-years', '2017,2018', '--out', tmp_path/'o')
    assert p.returncode == 2 and 'cannot make a fold for test year 2017' in p.stderr and 'allows test years 2018..2019' in p.stderr
    assert not (tmp_path/'o').exists()


def test_real_data_folds(cn_data):
    "The default folds on the real calendar: no overlap, and every label used by a choice realised before the test year."
    from alphanb.data import calendar
    from alphanb.study import fold_spans
    cal = calendar(cn_data)
    folds = fold_spans(cal, '2017-2019')
    assert [f.test[0].strftime('%Y-%m-%d') for f in folds] == ['2017-01-03', '2018-01-02', '2019-01-02']
    for f in folds:
        i = cal.get_loc
        assert f.train[1] < f.selection[0] and f.selection[1] < f.test[0]
        assert i(f.fit[1]) + 20 == i(f.train[1]) and i(f.select[1]) + 20 == i(f.selection[1])
    assert folds[0].train == (cal[60], cal[cal.year == 2015][-1])


@pytest.mark.long(seconds=28)
def test_trainings_on_ray_make_the_same_pools(ray_cluster, demo_data, tmp_path, monkeypatch):
    "`study(..., ray=...)`: each training a Ray task; the pools equal those of local processes."
    import alphanb.study as st
    from alphanb.study import study
    jobs = []
    class Counted(st.RayJob):
        def __init__(self, *a): super().__init__(*a); jobs.append(self)
    monkeypatch.setattr(st, 'RayJob', Counted)
    kw = dict(data=demo_data, universes='csi300', test_years='2019', seeds='0,1', steps=2, baselines=False, progress=False,
              verbose=False, settings={'ppo/batch_size': 16, 'ppo/minibatch_size': 16, 'pool/size': 6})
    here = study(**kw, out=tmp_path/'here', scratch=tmp_path/'s_here', jobs=2)
    there = study(**kw, out=tmp_path/'ray', scratch=tmp_path/'s_ray', ray='local')
    assert here['trained'] == there['trained'] == 2 and len(jobs) == 2 and all(j.returncode == 0 for j in jobs)
    for s in (0, 1):
        a, b = (json.loads((tmp_path/d/'csi300'/'test2019'/f'seed{s}'/'final_factors.json').read_text()) for d in ('here', 'ray'))
        assert [(e['expression'], e['weight']) for e in a] == [(e['expression'], e['weight']) for e in b]
    assert (tmp_path/'s_ray'/'csi300'/'test2019'/'seed0'/'checkpoint.pt').exists()


def _training_pids(scratch):
    "pid -> parent pid of the `alphanb train` processes whose settings are under `scratch`."
    out = {}
    for d in os.listdir('/proc'):
        if not d.isdigit(): continue
        try:
            cmd = open(f'/proc/{d}/cmdline', 'rb').read().split(b'\0')
            stat = open(f'/proc/{d}/stat').read().rsplit(')', 1)[1].split()
        except OSError: continue
        if b'train' in cmd and any(str(scratch).encode() in a for a in cmd) and stat[0] != 'Z': out[int(d)] = int(stat[1])
    return out


@pytest.mark.long(seconds=32)
def test_a_killed_ray_worker_resumes_the_training(ray_cluster, demo_data, tmp_path):
    """The Ray worker of a training is killed after its first checkpoint: its training dies with it, Ray runs the task again,
    and it resumes from the checkpoint to the pool of a training never interrupted."""
    import signal, threading
    from alphanb.study import study
    kw = dict(data=demo_data, universes='csi300', test_years='2019', seeds='0', steps=12, baselines=False, progress=False,
              verbose=False, settings={'ppo/batch_size': 16, 'ppo/minibatch_size': 16, 'pool/size': 6, 'run/checkpoint_every': 2})
    here = study(**kw, out=tmp_path/'here', scratch=tmp_path/'s_here', jobs=1)
    scratch = tmp_path/'s_ray'
    got = {}
    t = threading.Thread(target=lambda: got.update(study(**kw, out=tmp_path/'ray', scratch=scratch, ray='local')))
    t.start()
    ckpt = scratch/'csi300'/'test2019'/'seed0'/'checkpoint.pt'
    for _ in range(1200):
        if ckpt.exists() and _training_pids(scratch): break
        time.sleep(0.05)
    (child, worker), = _training_pids(scratch).items()
    os.kill(worker, signal.SIGKILL)
    for _ in range(100):                                    # the training does not outlive its worker
        if child not in _training_pids(scratch): break
        time.sleep(0.1)
    assert child not in _training_pids(scratch), 'the training outlived its killed Ray worker'
    t.join(timeout=600)
    assert not t.is_alive() and got['trained'] == here['trained'] == 1
    a, b = (json.loads((tmp_path/d/'csi300'/'test2019'/'seed0'/'final_factors.json').read_text()) for d in ('here', 'ray'))
    assert [(e['expression'], e['weight']) for e in a] == [(e['expression'], e['weight']) for e in b]
    log = (scratch/'csi300'/'test2019'/'seed0'/'log.csv').read_text().splitlines()
    assert [int(l.split(',')[0]) for l in log[1:]] == list(range(1, 13))   # every step once: one writer at a time


@pytest.mark.long(seconds=30)
def test_a_killed_study_takes_its_trainings_with_it(demo_data, tmp_path):
    "A study killed outright (SIGKILL: no chance to stop its trainings) leaves none running; run again, it resumes them."
    out, scratch = tmp_path/'study', tmp_path/'scratch'
    args = ['--data', demo_data, *TINY, '--steps', '20', '--no-baselines', '--out', out, '--scratch', scratch, '--set', 'run/checkpoint_every', '2']
    p = subprocess.Popen([sys.executable, '-m', 'alphanb', 'study', *map(str, args)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(1200):
        if len(_training_pids(scratch)) == 2 and list(scratch.rglob('checkpoint.pt')): break
        time.sleep(0.05)
    trainings = _training_pids(scratch)
    assert len(trainings) == 2 and all(parent == p.pid for parent in trainings.values()), trainings
    p.kill(); p.wait()
    for _ in range(100):
        if not _training_pids(scratch): break
        time.sleep(0.1)
    assert not _training_pids(scratch), 'trainings outlived their killed study'
    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])['trained'] == 2

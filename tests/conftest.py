"Shared fixtures: the real A-share data beside the checkout (skipped when absent) and the embedded demo market."
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CN_DATA = Path(os.environ.get('ALPHANB_CN_DATA', ROOT.parent/'shared'/'data'/'cn_data'))
DEMO = ROOT/'data'/'demo'


@pytest.fixture(scope='session')
def cn_data() -> Path:
    "The real CSI300/CSI500 Qlib data, or a skip when this machine does not have it."
    if not (CN_DATA/'calendars'/'day.txt').exists():
        pytest.skip(f'real A-share data not found at {CN_DATA}')
    return CN_DATA


@pytest.fixture(scope='session')
def demo_data() -> Path:
    "The embedded synthetic demo market shipped in data/demo."
    assert (DEMO/'calendars'/'day.txt').exists(), 'data/demo is missing: run `alphanb demo-data --out data/demo`'
    return DEMO


@pytest.fixture(scope='session')
def synthetic_market(tmp_path_factory):
    "Make a market with `alphanb demo-data` (the command itself, as a user would): `synthetic_market(stocks, days, seed)` -> its directory."
    import subprocess, sys
    def make(stocks:int, days:int, seed:int) -> Path:
        out = tmp_path_factory.mktemp('market')/f'{stocks}x{days}_seed{seed}'
        p = subprocess.run([sys.executable, '-m', 'alphanb', 'demo-data', '--out', str(out), '--stocks', str(stocks),
                            '--days', str(days), '--seed', str(seed)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return out
    return make


def pytest_configure(config):
    config.addinivalue_line('markers', 'long(seconds): a test that takes about this many seconds run alone; the longest start first')


def pytest_collection_modifyitems(config, items):
    """The long tests first, longest first (the rest keep their order): `make test` runs two pytest workers, each taking the
    next test when it finishes one, so that the longest do not start last and leave one worker running alone."""
    def seconds(item):
        m = item.get_closest_marker('long')
        return -float(m.kwargs.get('seconds', m.args[0] if m.args else 1)) if m else 0.
    items.sort(key=seconds)


@pytest.fixture(scope='session')
def ray_cluster():
    "A local Ray cluster of two CPUs started by the tests (skipped without Ray), stopped at the end of the session (one per pytest worker that needs it)."
    ray = pytest.importorskip('ray')
    if ray.is_initialized(): ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, object_store_memory=100 * 2**20)
    yield ray
    ray.shutdown()


# Property tests draw the same examples on every run, so CI is reproducible; `HYPOTHESIS_PROFILE=explore pytest`
# draws fresh random examples to hunt for new failures.
from hypothesis import settings as _hsettings
_hsettings.register_profile('ci', derandomize=True, database=None)
_hsettings.register_profile('explore', derandomize=False)
_hsettings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))

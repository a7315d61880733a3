"""The factor inspector as a person sees it: Voilà serves a notebook that opens it on the demo market, Debian's Chromium
(driven by Playwright, no browser download) types a formula, changes universe, horizon and dates, and checks that the
figures and the table change; a malformed formula shows its caret message. Screenshots go to the test's folder."""
import json, os, shutil, socket, subprocess, sys, time
from pathlib import Path

import pytest

CHROMIUM = next((p for p in [os.environ.get('ALPHANB_CHROMIUM'), shutil.which('chromium'), shutil.which('chromium-browser')] if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason='no Chromium: `apt-get install chromium` (make install does it where it can), '
                                                        'or set ALPHANB_CHROMIUM to a Chromium executable')
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync']          # this machine's network is closed: no background requests

NOTEBOOK = {'cells': [{'cell_type': 'code', 'execution_count': None, 'id': 'open', 'metadata': {}, 'outputs': [], 'source': [
    "from alphanb.data import load_panel\n",
    "from alphanb.inspect import inspect_factors\n",
    "from alphanb.env import demo_dir\n",
    "panel = load_panel(demo_dir(), 'csi300', '2018-06-01', '2019-06-28')\n",
    "insp = inspect_factors(panel, str(demo_dir()/'factors.json'), start='2018-09-03')\n",
    "insp"]}],
    'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}}, 'nbformat': 4, 'nbformat_minor': 5}

def free_port()->int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture
def voila(tmp_path):
    (tmp_path/'inspect.ipynb').write_text(json.dumps(NOTEBOOK))
    port = free_port()
    log = open(tmp_path/'voila.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'voila', 'inspect.ipynb', '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1',
                             '--show_tracebacks=True'], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, 'NUMBA_NUM_THREADS': '1', 'OMP_NUM_THREADS': '1'})
    url, t0 = f'http://127.0.0.1:{port}/', time.time()
    while True:
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=1): break
        except OSError:
            if proc.poll() is not None or time.time() - t0 > 60:
                raise RuntimeError(f'Voilà did not start: {(tmp_path/"voila.log").read_text()[-3000:]}')
            time.sleep(0.3)
    yield url
    proc.terminate(); proc.wait(10); log.close()

@pytest.mark.long(seconds=18)
def test_inspector_in_chromium(voila, tmp_path):
    from playwright.sync_api import sync_playwright, expect
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={'width': 1500, 'height': 1300})
        page.set_default_timeout(60_000)
        page.goto(voila, timeout=240_000)                     # Voilà runs the notebook before the page shows
        text_box = page.locator('.widget-text').filter(has_text='formula').locator('input')
        expect(text_box).to_be_visible(timeout=240_000)
        images, table = page.locator('.widget-image'), page.locator('.widget-html-content table')
        status = page.locator('.widget-html-content', has_text='backtest buys')
        expect(table).to_be_visible(); expect(images).to_have_count(3)
        expect(status).to_contain_text('csi300 2018-09-03')
        page.screenshot(path=tmp_path/'1_opened.png', full_page=True)

        def state():
            page.wait_for_function("() => [...document.querySelectorAll('.widget-image')].every(i => i.complete && i.naturalWidth > 0)")
            return [images.nth(i).get_attribute('src') for i in range(3)], table.inner_text(), status.inner_text()
        def changed(before, what):
            page.wait_for_function("([t]) => { const e = document.querySelector('.widget-html-content table'); return e && e.innerText !== t; }",
                                   arg=[before[1]])
            after = state()
            assert all(a != b for a, b in zip(after[0], before[0])), f'{what}: a figure did not change'
            return after

        s0 = state()
        # every figure is shown at its own aspect (no picture squeezed into a box of another shape)
        for i in range(3):
            w, h, nw, nh = images.nth(i).evaluate('e => [e.clientWidth, e.clientHeight, e.naturalWidth, e.naturalHeight]')
            assert abs(w / h - nw / nh) < 0.02, f'figure {i} shown at {w}x{h}, drawn at {nw}x{nh}'
        assert '%' in s0[1] and '.0000' not in s0[1]          # returns as percentages, counts as integers

        text_box.fill('Mean($close, 5) / $close - 1'); text_box.press('Enter')
        s1 = changed(s0, 'a typed formula')
        expect(page.locator('.widget-html-content pre')).to_contain_text('Mean')   # the formula tree
        page.screenshot(path=tmp_path/'2_formula.png', full_page=True)

        page.locator('.widget-dropdown').filter(has_text='universe').locator('select').select_option('csi500')
        s2 = changed(s1, 'the universe')
        expect(status).to_contain_text('csi500')

        horizon = page.locator('.widget-inline-hbox').filter(has_text='horizon').locator('input')
        horizon.fill('5'); horizon.press('Enter')
        s3 = changed(s2, 'the horizon')
        expect(status).to_contain_text('horizon 5')

        start = page.locator('.widget-datepicker').filter(has_text='from').locator('input')
        start.fill('2019-01-02'); start.press('Enter')
        changed(s3, 'the first date')
        expect(status).to_contain_text('csi500 2019-01-02')
        page.screenshot(path=tmp_path/'3_controls.png', full_page=True)

        before = state()
        text_box.fill('Mean($close, 5'); text_box.press('Enter')
        error = page.locator('.widget-html-content', has_text='^')
        expect(error).to_be_visible()
        # the caret sits under the column the message names (15: just after 'Mean($close, 5'), in a monospaced font
        end, caret = page.locator('.widget-html-content pre', has_text='^').evaluate('''e => {
            const t = e.firstChild, n = t.textContent.indexOf('\\n'), x = (a, b) => {
                const r = document.createRange(); r.setStart(t, a); r.setEnd(t, b); return r.getBoundingClientRect(); };
            return [x(n - 1, n).right, x(t.textContent.indexOf('^'), t.textContent.indexOf('^') + 1).left]; }''')
        assert abs(end - caret) < 1.5, f'caret at x={caret}, column 15 at x={end}'
        expect(page.get_by_text('showing the last result that worked')).to_be_visible()
        assert table.inner_text() == before[1]                # the last good view stays
        assert [images.nth(i).get_attribute('src') for i in range(3)] == before[0]
        page.screenshot(path=tmp_path/'4_error.png', full_page=True)
        browser.close()

"""Run the library notebooks as tests (as `nbdev_test` does) and keep what they printed, for the docs.

Each notebook in `nbs/` runs in its own process with nbdev's rules: cells flagged with a `tst_flags` flag
(settings.ini, e.g. `#| slow`) or `#| eval: false` are skipped, and the first error stops the notebook and fails the run.
Before it runs, a `show_doc` cell is added after every exported definition, as nbdev's docs do. The executed notebook
is written to OUT/<name>.ipynb with hidden and export cells' code removed, ready for Sphinx and myst-nb to render.
Unlike `nbdev_test`, notebooks marked `skip_exec` (the papermill notebooks train.ipynb and report.ipynb) run too, with
their default parameters, so that they are tested and the docs show their outputs.
The executed experiment records in `nbs/experiments/` are copied to OUT/experiments/ as they are.

    python tools/run_nbs.py [--n_workers 2] [--out docs/nbs] [NOTEBOOK ...]
"""
import argparse, os, re, shutil, subprocess, sys, time, traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from execnb.nbio import mk_cell, write_nb
from execnb.shell import CaptureShell
from nbdev.config import get_config
from nbdev.frontmatter import FrontmatterProc
from nbdev.process import NBProcessor
from nbdev.processors import add_show_docs

HIDDEN = {'hide', 'export', 'exporti', 'default_exp'}          # cells whose code the docs do not show
# the longest notebooks (a minute or more on two cores) start first, so that the workers end together
LONG = ('14_study', '15_bench', '01_ops', '12_baseline', '13_qlib', 'train', '16_scoring', '03d_novelty')
DIRECTIVE = re.compile(r'^#\|.*$\n?', re.MULTILINE)

def run_one(fn:Path, out:Path, skip:set, root:Path)->tuple[bool, float, str]:
    "Run notebook `fn` with show_doc cells added; write the executed copy to `out`. (passed, seconds, error text)"
    os.environ['IN_TEST'] = '1'
    sys.path.insert(0, str(root))
    t0 = time.time()
    nb = NBProcessor(fn, procs=[FrontmatterProc, add_show_docs], process=True).nb
    def no_eval(cell):
        if cell.cell_type != 'code': return True
        d = getattr(cell, 'directives_', {}) or {}
        return d.get('eval:', [''])[0].lower() == 'false' or bool(skip & d.keys())
    shell = CaptureShell(fn)
    cwd = os.getcwd()
    try:
        os.chdir(fn.parent)
        shell.run_all(nb, exc_stop=True, preproc=no_eval)
        ok, err = True, ''
    except BaseException:
        ok, err = False, shell.prettytb(fname=fn) if shell.exc else traceback.format_exc()
    finally: os.chdir(cwd)
    for c in nb.cells:
        if c.cell_type != 'code': continue
        d = getattr(c, 'directives_', {}) or {}
        if d.keys() & HIDDEN or getattr(c, 'has_sd', False):         # export cells, and the show_doc cells added above
            c.metadata = {**c.get('metadata', {}), 'tags': ['remove-input']}
        c.source = DIRECTIVE.sub('', c.source)
        for o in c.get('outputs', []):       # show_doc's markdown opens with a rule, which docutils allows only between sections
            md = o.get('data', {}).get('text/markdown')
            if md is not None:     # (and its source link carries Quarto's attribute syntax, which Sphinx would print)
                md = re.sub(r'^---\s*$\n?', '', ''.join(md), flags=re.MULTILINE)
                o['data']['text/markdown'] = re.sub(r'\)\{target="_blank"[^}]*\}', ')', md)
        c.setdefault('outputs', []); c.setdefault('execution_count', None)
    nb.cells = [c for c in nb.cells if (c.cell_type != 'code' or c.source.strip() or c.outputs)
                and not (c.cell_type == 'raw' and c.source.startswith('---'))]       # the front matter, as a heading:
    fm = getattr(nb, 'frontmatter_', None) or {}
    if fm.get('title'): nb.cells.insert(0, mk_cell(f"# {fm['title']}\n\n> {fm.get('description', '')}".strip(), 'markdown'))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, out)
    return ok, time.time() - t0, err

def _launch(fn:Path, out:Path)->tuple[bool, float, str]:
    "Run one notebook in a new process (an IPython shell per process, as each notebook expects)."
    t0 = time.time()
    r = subprocess.run([sys.executable, __file__, '--one', str(fn), '--out', str(out/fn.name)], capture_output=True, text=True)
    return r.returncode == 0, time.time() - t0, (r.stderr or r.stdout)[-20000:]

def main(argv=None)->int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('notebooks', nargs='*', help='notebooks to run (default: every nbs/*.ipynb)')
    p.add_argument('--n_workers', type=int, default=2, help='notebooks at once, one process each')
    p.add_argument('--out', default='docs/nbs', help='where the executed notebooks go')
    p.add_argument('--one', help=argparse.SUPPRESS)                # run this notebook here, writing to --out
    a = p.parse_args(argv)
    cfg = get_config()
    root, nbs = Path(cfg.config_path), Path(cfg.nbs_path)
    if a.one:
        ok, _, err = run_one(Path(a.one), Path(a.out), set(cfg.get('tst_flags', '').split()), root)
        if not ok: sys.stderr.write(err + '\n')
        return 0 if ok else 1
    out = Path(a.out).resolve()
    files = [Path(f).resolve() for f in a.notebooks] or sorted(f.resolve() for f in nbs.glob('*.ipynb') if not f.name.startswith('_'))
    files.sort(key=lambda f: LONG.index(f.stem) if f.stem in LONG else len(LONG))
    t0 = time.time()
    with ThreadPoolExecutor(a.n_workers) as ex: res = list(ex.map(lambda f: _launch(f, out), files))
    failed = [(f, err) for f, (ok, _, err) in zip(files, res) if not ok]
    for f, err in failed: sys.stderr.write(f'{f.name}:\n{err}\n')
    if (nbs/'experiments').is_dir():                             # the records, executed by papermill, as they are
        shutil.copytree(nbs/'experiments', out/'experiments', dirs_exist_ok=True,
                        ignore=lambda d, names: [n for n in names if (Path(d)/n).is_file() and not n.endswith(('.ipynb', '.png'))])
    slow = sorted(zip(files, res), key=lambda t: -t[1][1])[:3]
    print(f"{len(files) - len(failed)}/{len(files)} notebooks passed in {time.time() - t0:.0f}s "
          f"(slowest: {', '.join(f'{f.name} {r[1]:.0f}s' for f, r in slow)}); executed copies in {out}")
    if failed: sys.stderr.write('failed: ' + ', '.join(f.name for f, _ in failed) + '\n')
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main())

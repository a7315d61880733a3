"Sphinx configuration of alphanb's docs: every notebook rendered with the outputs `tools/run_nbs.py` kept (`make docs`)."
import re
from pathlib import Path

root = Path(__file__).resolve().parents[1]
project = 'alphanb'
version = release = re.search(r'__version__\s*=\s*["\']([^"\']+)', (root/'alphanb'/'__init__.py').read_text()).group(1)
extensions = ['myst_nb']
nb_execution_mode = 'off'                # the notebooks were run (as the tests) by tools/run_nbs.py
myst_enable_extensions = ['dollarmath', 'colon_fence']
suppress_warnings = ['myst.header', 'myst.xref_missing', 'misc.highlighting_failure', 'mystnb.unknown_mime_type', 'toc.not_included']
exclude_patterns = ['_build', '**/.ipynb_checkpoints']
html_theme = 'alabaster'
html_title = f'alphanb {version}'
html_theme_options = {'page_width': '1180px', 'sidebar_width': '230px'}

"""The JoinQuant strategy's operator tables are literals (the strategy runs without alphanb). After adding an operator
or changing a record in alphanb.operators, this rewrites them from the records in nbs/10a_jq_strategy.ipynb, exports,
and rewrites joinquant/strategy.py:

    python tools/sync_strategy.py
"""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT/'nbs'/'10a_jq_strategy.ipynb'
BEGIN, END = '# >>> operator table', '# <<< operator table'

def replace_table(text:str, table:str)->str:
    "`text` with the lines between the table markers replaced by `table`."
    lines = text.split('\n')
    a = next(i for i, l in enumerate(lines) if l.startswith(BEGIN))
    b = next(i for i, l in enumerate(lines) if l.startswith(END))
    return '\n'.join(lines[:a + 1] + table.split('\n') + lines[b:])

def main()->int:
    sys.path.insert(0, str(ROOT))
    from alphanb.joinquant import operator_table_source
    nb = json.loads(NB.read_text(encoding='utf-8'))
    cell = next(c for c in nb['cells'] if c['cell_type'] == 'code' and any(l.startswith(BEGIN) for l in c['source']))
    text = replace_table(''.join(cell['source']), operator_table_source())
    cell['source'] = text.splitlines(keepends=True)
    NB.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    bin_ = Path(sys.executable).parent
    subprocess.run([bin_/'nbdev_export'], cwd=ROOT, check=True)
    subprocess.run([sys.executable, '-m', 'alphanb', 'export-joinquant', '--template', 'joinquant/strategy.py'], cwd=ROOT, check=True)
    return 0

if __name__ == '__main__': sys.exit(main())

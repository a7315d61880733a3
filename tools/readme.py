"""README.md is written from nbs/index.ipynb: its markdown cells as they are, its code cells as Python blocks.

    python tools/readme.py           # write README.md
    python tools/readme.py --check   # exit 1 (saying so) when README.md is not what nbs/index.ipynb makes
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def readme(nb_path=ROOT/'nbs'/'index.ipynb')->str:
    "The README text of the index notebook."
    parts = []
    for c in json.loads(Path(nb_path).read_text(encoding='utf-8'))['cells']:
        src = ''.join(c['source']).strip('\n')
        if c['cell_type'] == 'markdown': parts.append(src)
        elif c['cell_type'] == 'code' and not src.startswith('#|'): parts.append(f'```python\n{src}\n```')
    return '\n\n'.join(parts) + '\n'

def main(argv=None)->int:
    text, out = readme(), ROOT/'README.md'
    if '--check' in (argv if argv is not None else sys.argv[1:]):
        if out.read_text(encoding='utf-8') != text:
            print('README.md is not what nbs/index.ipynb makes: edit nbs/index.ipynb, then run python tools/readme.py', file=sys.stderr)
            return 1
        return 0
    out.write_text(text, encoding='utf-8')
    return 0

if __name__ == '__main__': sys.exit(main())

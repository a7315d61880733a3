"nbs/report.ipynb runs through papermill on the demo market and saves its figures as PNG files."
import json
from pathlib import Path

import pytest

import papermill as pm

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ['nav', 'drawdown', 'ic', 'deciles', 'turnover', 'metrics']
FACTORS = [{'factor_name': 'reversal_20', 'expression': '-($close/Delay($close,20)-1)', 'qlib_expression': '-($close/Ref($close,20)-1)',
            'weight': 1.0, 'interpretation': '20-day reversal', 'performance': {}},
           {'factor_name': 'pressure_5', 'expression': 'Mean(Pressure, 5)', 'qlib_expression': None,
            'weight': 0.5, 'interpretation': "where the close sits in the day's range", 'performance': {}}]


def test_report_notebook_writes_figures(tmp_path, demo_data):
    factors = tmp_path/'factors.json'
    factors.write_text(json.dumps(FACTORS))
    out = tmp_path/'report'
    pm.execute_notebook(str(ROOT/'nbs'/'report.ipynb'), str(tmp_path/'report.ipynb'), kernel_name='python3', progress_bar=False,
                        parameters=dict(factors=str(factors), data=str(demo_data), start='2019-06-01', end='2019-10-31',
                                        out=str(out), topk=5, warmup=30))
    for name in FIGURES:
        png = out/f'{name}.png'
        assert png.exists(), f'{png} missing'
        assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 5_000   # a real, non-blank figure
    metrics = json.loads((out/'metrics.json').read_text())
    assert metrics['n_days'] > 80 and 'excess_return' in metrics
    assert (out/'nav.csv').read_text().startswith('date,nav,benchmark')

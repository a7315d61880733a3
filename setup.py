"Packaging for alphanb: requirements come from settings.ini, the version from `alphanb.__version__`."
import re
from configparser import ConfigParser
from pathlib import Path
from setuptools import find_packages, setup

here = Path(__file__).parent
cfg = ConfigParser(delimiters=['='])
cfg.read(here/'settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']
version = re.search(r'^__version__\s*=\s*["\']([^"\']+)', (here/'alphanb'/'__init__.py').read_text(), re.M).group(1)

# the embedded demo market data/demo ships inside the package as alphanb/demo, each of its folders a data-only package
demo = ['alphanb.demo'] + sorted('alphanb.demo.' + '.'.join(d.relative_to(here/'data'/'demo').parts)
                                 for d in (here/'data'/'demo').rglob('*') if d.is_dir())

setup(
    name=cfg['lib_name'], version=version, description=cfg['description'],
    long_description=(here/'README.md').read_text(encoding='utf-8'), long_description_content_type='text/markdown',
    license='Apache-2.0', python_requires=f">={cfg['min_python']}",
    packages=find_packages(include=['alphanb', 'alphanb.*']) + demo, package_dir={'alphanb.demo': 'data/demo'},
    package_data={p: ['*'] for p in demo}, include_package_data=True,
    install_requires=cfg['requirements'].split(), extras_require={'dev': cfg['dev_requirements'].split(), 'ray': cfg['ray_requirements'].split()},
    entry_points={'console_scripts': cfg['console_scripts'].split(), 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False,
)

from setuptools import setup

setup(
    name="clinit",
    version="0.1.0",
    description="A per-node init daemon for resource groups",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["clinit"],
    install_requires=["pykka>=4,<5", "docopt-ng>=0.9"],  # actor.py overrides two of pykka 4's hooks
    extras_require={
        "test": ["pytest>=7", "pytest-xdist>=3", "hypothesis>=6"],
        "bench": ["supervisor>=4"],
    },
    entry_points={"console_scripts": ["clinit = clinit.cli:main",
                                    "clinit-ocf = clinit.ocf:main"]},
)

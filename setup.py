"""Build glue for what pyproject.toml cannot say: put ``tracker_hf_hook.pth`` in site-packages.

The .pth lets ``TrainingArguments(report_to=["tracker"])`` work in scripts that never import
tracker (see tracker/integrations/_hf_hook.py, whose ``PTH_TEXT`` is the file's content;
it is read from the source here, so an sdist needs no extra file). Regular wheels get it
from ``build_lib``; editable installs (PEP 660) discard ``build_lib`` and pack the wheel
from ``install_lib``, so there it is written next to the editable finder instead.
"""

import ast
import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
HOOK = os.path.join(HERE, "tracker", "integrations", "_hf_hook.py")


def _constant(name: str) -> str:
    with open(HOOK, encoding="utf-8") as f:
        tree = ast.parse(f.read(), HOOK)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise RuntimeError(f"{name} not found in {HOOK}")


class build_py_with_pth(build_py):
    def run(self) -> None:
        super().run()
        target = self._pth_target()
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as f:
            f.write(_constant("PTH_TEXT"))

    def _pth_target(self) -> str:
        if getattr(self, "editable_mode", False):
            return os.path.join(
                self.get_finalized_command("install").install_lib, _constant("PTH_NAME")
            )
        return os.path.join(self.build_lib, _constant("PTH_NAME"))

    def get_outputs(self, include_bytecode: bool = True) -> list:
        return [
            *super().get_outputs(include_bytecode),
            os.path.join(self.build_lib, _constant("PTH_NAME")),
        ]


setup(cmdclass={"build_py": build_py_with_pth})

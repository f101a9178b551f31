"""The command lines: `ft` (argparse, app.py) and Hydra's own door for `ft train` with Hydra flags
(hydra_door.py). Both parse flags only and hand a run to framework.run; errors become one line and
an exit code here."""

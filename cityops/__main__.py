"""``python -m cityops``: the ``cityops`` command (``commands.main``)."""

from cityops.commands import main

main()

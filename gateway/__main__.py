"""``python -m gateway`` runs the ``rogatory`` command line."""

from gateway.cli import main

main()

"""The command line: the Hydra shell around the tasks (main), `--help` (help), and how errors
reach the console (one paragraph, exit status 2)."""

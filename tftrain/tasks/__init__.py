"""The tasks, each opened the same way (tftrain.tasks.run.open_run): train, lr_find, predict,
evaluate (the `task` group's targets). No task module imports another: what two share is in
run, resume, outputs, runs and range_test."""

"""Tools over runs, called by the command line: validate/show, list, report, eval/predict/merge,
the data check and estimate's printing."""

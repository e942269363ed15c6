"""Names that command-line options take, in a module light enough for building the CLI parser
(the modules that act on them import torch, scipy or pandas)."""

DATASETS = ("things", "things_fmri", "nod", "nights", "cka")  # evaluation sets, in report order
DISTANCE_METRICS = ("pearson", "cosine", "euclidean")  # RDM distances (1 - r, 1 - cos, Euclidean)
SIMILARITY_METRICS = ("spearman", "pearson", "kendall")  # RDM-to-RDM correlation
TRUNCATE_RULES = ("min_val_loss", "none", "baseline_only")  # which epochs of a run a summary reads
NIGHTS_DEFAULT_SPLIT = "test"  # the published NIGHTS evaluation; `split: all` scores every split
STAT_TESTS = ("t", "sign_flip")  # the test over seeds whose p-values analyze corrects (BH)

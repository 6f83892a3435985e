"""What every run shares, whatever its method: recipe and config loading (:mod:`.config`), run folders
and their lock (:mod:`.runfolder`), checkpoints (:mod:`.checkpoint`), metrics (:mod:`.metrics_log`) and
plots (:mod:`.plots`), progress lines (:mod:`.progress`), learning-rate schedules (:mod:`.schedule`),
devices and mixed precision (:mod:`.devices`), the C allocator's reuse of freed memory (:mod:`.allocator`),
processes (:mod:`.distributed`), data sets and epoch
batches (:mod:`.loaders`), tasks (:mod:`.tasks`), the evaluation loop (:mod:`.evaluation`), divergence
checks (:mod:`.divergence`) and the fit loop the trainer and the searcher run on (:mod:`.fit`)."""

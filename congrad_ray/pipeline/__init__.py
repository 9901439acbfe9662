"""The Ray shell around the core: stages that read, validate, tokenise, sketch, reduce, select and write."""

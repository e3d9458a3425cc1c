"""kernel_product's mini-language (the 2018 KeOps kernel names, `language.py`) and its
modes (`modes.py`), shared by the torch and numpy front ends: a kernel name and a mode
become one formula of the formula language, run by the front end's Genred."""

"""Numbers every layer agrees on, in a module that loads nothing: a recipe is checked
against them without torch, and the code that uses them imports them from here."""

#: The smallest sampling temperature accepted; below it logits / temperature overflow even in float64.
MIN_TEMPERATURE = 1e-6

#: The largest recipe file read, in bytes; the shipped recipes are a few KiB. A bigger file
#: is refused before it is read, so that a wrong path to a huge file exhausts no memory.
MAX_RECIPE_BYTES = 1 << 20

#: How deeply a recipe's tables and arrays may nest; a recipe needs 4 (runs.N.train.optimizer).
#: Deeper data is refused before anything walks it, so no walk can overflow the stack.
MAX_RECIPE_DEPTH = 32

"""Numbers every layer agrees on, in a module that loads nothing: a recipe is checked
against them without torch, and the code that uses them imports them from here."""

#: The smallest sampling temperature accepted; below it logits / temperature overflow even in float64.
MIN_TEMPERATURE = 1e-6

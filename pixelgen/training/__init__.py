"""Training: a planned run on Lightning Fabric. Planning and checking every run of a recipe
(plan), the loop and its policies (trainer), the likelihood of a data set (evaluation).
"""

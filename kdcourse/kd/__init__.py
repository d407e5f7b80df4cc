"""Knowledge-distillation methods and the machinery around them.

``hinton`` (the soft-target loss of Hinton et al. and its checks), ``subclass`` (subclass
distillation: learned and known subclasses, and their analysis), ``teachers`` (teacher outputs
computed once and cached), ``stacked`` (a grid of students trained together), ``takd`` (teacher
assistants) and ``eskd`` (early-stopped teachers).
"""

"""The core build as one sequence of steps (:mod:`.sequence`) and its blocking checks (:mod:`.quality`)."""

"""Reports of a training run or of saved probabilities: numbers (:mod:`.stats`), pictures (:mod:`.plots`), and
finding the inputs and writing the files (:mod:`.runs`: ``report_run``, ``report_probabilities``)."""
from engine.report.runs import Outcome, report_probabilities, report_run

__all__ = ["Outcome", "report_probabilities", "report_run"]

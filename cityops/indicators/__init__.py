"""Vital signs (体征指标): the catalogue of sectors → runways → sub-runways → indicators, their computation at every
unit level, judgement against bands, breaches, scorecards, the cockpit's API and the demo's history."""

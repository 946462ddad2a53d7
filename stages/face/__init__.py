"""Face helpers of the stages: similarity alignment to the model's crop, face tracking through
footage, and putting a dubbed shot's mouth at rest."""

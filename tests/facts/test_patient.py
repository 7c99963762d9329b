from datetime import date

from cds_service.facts.patient import demographics


def test_age_on_the_as_of_date():
    patient = {"resourceType": "Patient", "birthDate": "1950-11-23", "gender": "male"}
    assert demographics(patient, date(2026, 11, 22)) == (75, "male")
    assert demographics(patient, date(2026, 11, 23)) == (76, "male")


def test_partial_birth_date_and_missing_data():
    assert demographics({"birthDate": "1960"}, date(2026, 6, 1)) == (66, None)
    assert demographics({"gender": "female"}, date(2026, 6, 1)) == (None, "female")
    assert demographics(None, date(2026, 6, 1)) == (None, None)
    assert demographics({"birthDate": "not a date"}, date(2026, 6, 1)) == (None, None)


def test_age_stops_at_death():
    patient = {"birthDate": "1900-01-01", "deceasedDateTime": "1980-06-01T00:00:00Z"}
    assert demographics(patient, date(2026, 11, 22))[0] == 80

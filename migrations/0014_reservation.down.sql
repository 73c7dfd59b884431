DELETE FROM cuesched.migration WHERE version = 14;
DROP TABLE cuesched.reservation;

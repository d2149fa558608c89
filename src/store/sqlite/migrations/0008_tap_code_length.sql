-- tapd schema version 8: a TAP records how many characters its code has.
--
-- A RADIUS or federation sign-in whose credential has another length (or a character outside
-- the code alphabet) is known not to be the user's TAP without an argon2 verification. TAPs
-- created before this version have NULL: any TAP length is then considered possible.

ALTER TABLE taps ADD COLUMN code_length INTEGER;
